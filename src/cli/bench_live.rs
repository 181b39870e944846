//! `easel bench --live`: stroke-to-frame latency of live painting, measured the way the studio
//! makes a frame — a stroke on the studio's canvas, the frame's request and the canvas picture
//! taken on this thread, the frame rendered on the real worker thread (live preset, tiny
//! autoencoder, cached text embeddings), the picture turned into texture pixels back here — and
//! how much of that time is the model's own work (tiny encode, UNet steps, tiny decode). The
//! pause the studio waits after a stroke is a setting, not work, and is left out.
//!
//! Without `--model` the networks are a full-size SD 1.5 with random weights (they cost exactly
//! what trained ones do); the tiny autoencoder is a full-size TAESD with random weights unless
//! `--taesd` names one.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use easel::engine::checkpoint::SingleFileParts;
use easel::engine::clip::ClipTextEncoder;
use easel::engine::config::{ClipConfig, TinyVaeConfig, UNetConfig, VaeConfig};
use easel::engine::device::Precision;
use easel::engine::live::LivePreset;
use easel::engine::tiny_vae::{TinyDecoder, TinyEncoder};
use easel::engine::unet::UNet;
use easel::engine::vae::Vae;
use easel::engine::weights::TensorMap;
use easel::engine::{Family, GenerationRequest, StableDiffusion};
use easel::gui::canvas::Canvas;
use easel::worker::{Command, Event, FrameDone, LiveJob, Worker};
use serde_json::json;

use super::bench::{median, RandomWeights, SD15_UNET, SD15_VAE};

/// What to measure.
pub struct LiveBench<'a> {
    /// A model to load instead of the random full-size SD 1.5.
    pub model: Option<&'a Path>,
    /// A tiny autoencoder instead of a random full-size TAESD.
    pub taesd: Option<&'a Path>,
    /// Square frame sizes.
    pub sizes: &'a [usize],
    /// Timed frames per size (after one warm-up frame).
    pub runs: usize,
    /// The live preset's id.
    pub preset: &'a str,
    /// Where to run.
    pub device: &'a Device,
    /// The precision.
    pub precision: Precision,
    /// Print nothing (the caller prints JSON).
    pub quiet: bool,
}

/// Runs the measurement and returns its rows.
pub fn run(bench: &LiveBench) -> anyhow::Result<serde_json::Value> {
    let dtype = bench.precision.dtype_on(bench.device)?;
    let (model, label) = match bench.model {
        Some(path) => (StableDiffusion::load(path, bench.device, dtype)?, path.display().to_string()),
        None => (random_sd15(bench.device, dtype)?, "random SD 1.5 (full size)".to_string()),
    };
    let family = model.family;
    let scratch = tempfile::tempdir()?;
    let taesd = match bench.taesd {
        Some(path) => path.to_path_buf(),
        None => write_random_taesd(scratch.path(), bench.device, dtype)?,
    };
    let preset = LivePreset::by_id(bench.preset, family);
    if !bench.quiet {
        println!(
            "live painting on {} ({} threads), {label}, {}",
            easel::engine::kernels::machine::cpu_name(),
            candle_core::utils::get_num_threads(),
            bench.precision.id()
        );
        println!(
            "preset {}: {} with {} steps × strength 0.5, guidance {}",
            preset.id,
            preset.sampler.id(),
            preset.steps,
            preset.cfg_scale
        );
    }
    // The worker wakes this thread as it wakes the window.
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    let wake_tx = Mutex::new(wake_tx);
    let worker = Worker::with_model(
        model,
        bench.precision,
        Box::new(move || {
            if let Ok(tx) = wake_tx.lock() {
                let _ = tx.send(());
            }
        }),
    )?;
    let mut rows = Vec::new();
    for &size in bench.sizes {
        let mut request = GenerationRequest {
            prompt: "a lighthouse at dusk, ink sketch".into(),
            seed: 1,
            width: size,
            height: size,
            strength: 0.5,
            vae: Some(taesd.clone()),
            ..GenerationRequest::default()
        };
        preset.apply(&mut request);
        let mut canvas = Canvas::new(size as u32, size as u32);
        canvas.size = size as f32 / 20.0;
        let mut samples = Vec::with_capacity(bench.runs);
        // The first frame encodes the prompt and warms the allocator; it is not timed.
        for run in 0..=bench.runs {
            samples.push(frame(&worker, &wake_rx, &mut canvas, &request, run)?);
        }
        samples.remove(0);
        let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let total = pick(|s| s.total_secs);
        let model_secs = pick(|s| s.model_secs);
        let overhead = pick(|s| s.total_secs - s.model_secs);
        let (encode, denoise, decode) = (
            pick(|s| s.frame.timings.encode_secs),
            pick(|s| s.frame.timings.denoise_secs),
            pick(|s| s.frame.timings.decode_secs),
        );
        let studio = pick(|s| s.studio_secs);
        let steps = samples.first().map_or(0, |s| s.frame.timings.steps);
        if !bench.quiet {
            println!(
                "{size}x{size}: stroke to frame {total:.3} s; model {model_secs:.3} s ({steps} UNet steps {denoise:.3} s, \
                 tiny encode {encode:.3} s, tiny decode {decode:.3} s); overhead {overhead:.4} s = {:.1} % \
                 (studio thread {studio:.4} s)",
                100.0 * overhead / total
            );
        }
        rows.push(json!({
            "size": size, "stroke_to_frame_secs": total, "model_secs": model_secs, "overhead_secs": overhead,
            "overhead_fraction": overhead / total, "studio_thread_secs": studio, "steps": steps,
            "unet_steps_secs": denoise, "tiny_encode_secs": encode, "tiny_decode_secs": decode,
        }));
    }
    Ok(
        json!({ "model": label, "preset": preset.id, "cpu": easel::engine::kernels::machine::cpu_name(), "frames": rows }),
    )
}

/// One frame's measurements.
struct Sample {
    frame: FrameDone,
    /// From the stroke's end to the frame's texture pixels.
    total_secs: f64,
    /// The networks' share, as the engine timed it.
    model_secs: f64,
    /// What the studio's thread spent: the request, the canvas picture, the texture pixels.
    studio_secs: f64,
}

/// Draws a stroke, asks for a frame as the studio does, and waits for it.
fn frame(
    worker: &Worker,
    wake: &std::sync::mpsc::Receiver<()>,
    canvas: &mut Canvas,
    request: &GenerationRequest,
    run: usize,
) -> anyhow::Result<Sample> {
    let (w, h) = canvas.size_px();
    let (w, h) = (w as f32, h as f32);
    let k = run as f32 + 1.0;
    canvas.begin_stroke(w * (0.1 + 0.07 * k % 0.5), h * 0.1);
    canvas.stroke_to(w * 0.5, h * (0.3 + 0.05 * k % 0.4));
    canvas.stroke_to(w * 0.9, h * 0.9);
    canvas.end_stroke();
    let stroke_end = Instant::now();
    // The studio's side: the state's key (the request as JSON), the canvas at the frame's size.
    let key = format!("{}|{}", canvas.version(), serde_json::to_string(request)?);
    std::hint::black_box(&key);
    let picture = canvas.picture_at(request.width as u32, request.height as u32);
    let job = LiveJob {
        id: run as u64,
        request: request.clone(),
        canvas: picture,
        cancel: Arc::new(AtomicBool::new(false)),
        asked: Instant::now(),
    };
    let before_send = stroke_end.elapsed().as_secs_f64();
    worker.send(Command::Live(Box::new(job))).map_err(anyhow::Error::msg)?;
    let done = loop {
        wake.recv()?;
        match worker.try_recv() {
            Some(Event::LiveFrame(done)) => break *done,
            Some(Event::LiveStopped { outcome, .. }) => anyhow::bail!("the frame stopped: {outcome:?}"),
            _ => {}
        }
    };
    let arrived = Instant::now();
    let pixels = easel::gui::textures::color_image(&done.image);
    std::hint::black_box(&pixels);
    let total_secs = stroke_end.elapsed().as_secs_f64();
    let studio_secs = before_send + arrived.elapsed().as_secs_f64();
    let model_secs = done.timings.model_secs();
    Ok(Sample { frame: done, total_secs, model_secs, studio_secs })
}

/// A full-size SD 1.5 (UNet, VAE, CLIP ViT-L) with random weights and the bundled tokenizer.
fn random_sd15(device: &Device, dtype: DType) -> anyhow::Result<StableDiffusion> {
    let unet_config: UNetConfig = serde_json::from_str(SD15_UNET)?;
    let vae_config: VaeConfig = serde_json::from_str(SD15_VAE)?;
    let clip_config: ClipConfig = serde_json::from_str(
        r#"{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "projection_dim": 768}"#,
    )?;
    let unet = recorded(device, dtype, |vb| UNet::new(vb, &unet_config).map(drop).map_err(Into::into))?;
    let vae = recorded(device, dtype, |vb| Vae::new(vb, &vae_config).map(drop).map_err(Into::into))?;
    let text =
        recorded(device, dtype, |vb| ClipTextEncoder::new(vb, &clip_config).map(drop).map_err(Into::into))?;
    let parts = SingleFileParts {
        family: Family::Sd1,
        unet,
        unet_config,
        vae,
        vae_config,
        text,
        clip_config,
        text_2: None,
    };
    Ok(StableDiffusion::from_parts(parts, &[], &[], Path::new("random-sd15"), device, dtype)?)
}

/// The tensors `build` asks for, drawn at random.
fn recorded(
    device: &Device,
    dtype: DType,
    build: impl FnOnce(VarBuilder) -> anyhow::Result<()>,
) -> anyhow::Result<TensorMap> {
    let map = Arc::new(Mutex::new(TensorMap::new()));
    build(VarBuilder::from_backend(Box::new(RandomWeights(Arc::clone(&map))), dtype, device.clone()))?;
    let map = map.lock().map_err(|_| anyhow::anyhow!("the weights' lock was poisoned"))?;
    Ok(map.clone())
}

/// Writes a full-size TAESD (encoder and decoder) with random weights as a diffusers folder.
fn write_random_taesd(dir: &Path, device: &Device, dtype: DType) -> anyhow::Result<PathBuf> {
    let cfg = TinyVaeConfig::default();
    let mut tensors = recorded(device, dtype, |vb| {
        TinyEncoder::new(vb.pp("encoder.layers"), &cfg, PathBuf::from("random"))?;
        TinyDecoder::new(vb.pp("decoder.layers"), &cfg, PathBuf::from("random"))?;
        Ok(())
    })?;
    for t in tensors.values_mut() {
        *t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    }
    let folder = dir.join("taesd");
    std::fs::create_dir_all(&folder)?;
    std::fs::write(folder.join("config.json"), r#"{"_class_name": "AutoencoderTiny"}"#)?;
    candle_core::safetensors::save(&tensors, folder.join("diffusion_pytorch_model.safetensors"))?;
    Ok(folder)
}
