//! `easel bench`: seconds per UNet evaluation and per VAE decode of SD 1.5- or SDXL-sized
//! networks with random weights, and peak memory — the numbers the speed work is measured by. Random weights
//! cost exactly what real ones do, so no download is needed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use clap::Args;
use easel::engine::conditioning::Conditioning;
use easel::engine::config::{read_json, TinyVaeConfig, UNetConfig, VaeConfig};
use easel::engine::device::{DeviceChoice, Precision};
use easel::engine::lora::delta::Delta;
use easel::engine::lora::{self, Adapter, AdapterModule, MergeBase, ModuleName, StackEntry, Target};
use easel::engine::tiny_vae::TinyDecoder;
use easel::engine::unet::UNet;
use easel::engine::vae::Vae;
use easel::engine::weights::TensorMap;
use easel::metrics::fid::{frechet_distance, Statistics};
use easel::metrics::inception::FidInception;
use easel::metrics::resize::prepare;
use easel::metrics::ResizeMode;
use serde_json::json;

#[derive(Args)]
pub struct BenchArgs {
    /// The networks to time: sd15 (SD 1.5's UNet and VAE) or sdxl (SDXL base 1.0's).
    #[arg(long, default_value = "sd15", value_parser = ["sd15", "sdxl"])]
    family: String,
    /// Picture sizes to time the UNet at (square, pixels) [default: 256,512; sdxl: 512,1024].
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Timed runs per measurement (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also time a VAE decode at the largest size.
    #[arg(long)]
    vae: bool,
    /// Also time the tiny preview decoder (TAESD) at the largest size.
    #[arg(long)]
    preview: bool,
    /// A UNet config.json to bench instead of SD 1.5's.
    #[arg(long)]
    unet_config: Option<PathBuf>,
    /// A VAE config.json to bench instead of SD 1.5's.
    #[arg(long)]
    vae_config: Option<PathBuf>,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value_t = DeviceChoice::Cpu, value_parser = super::errors::value::<DeviceChoice>)]
    device: DeviceChoice,
    /// f32, f16 or bf16.
    #[arg(long, default_value_t = Precision::F32, value_parser = super::errors::value::<Precision>)]
    dtype: Precision,
    /// Also time re-weighting a random LoRA of this rank (on every attention, feed-forward and
    /// projection layer) and a UNet evaluation with it merged, at the largest size.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// Also time a UNet evaluation steered by one ControlNet unit (the ControlNet's pass and the
    /// UNet's with its residuals) at the largest size, beside the plain one.
    #[arg(long)]
    controlnet: bool,
    /// Also time Inception feature extraction (pictures per second) and FID on 2048-d statistics.
    #[arg(long)]
    metrics: bool,
    /// Time live painting instead: stroke-to-frame latency through the worker, and the share of
    /// it that is the model's own work, at each of --sizes (a full-size random SD 1.5 unless
    /// --model names a model).
    #[arg(long)]
    live: bool,
    /// With --live: a model (folder or file) instead of random full-size SD 1.5 weights.
    #[arg(long, requires = "live")]
    model: Option<PathBuf>,
    /// With --live: a TAESD folder or file instead of a random full-size one.
    #[arg(long, requires = "live")]
    taesd: Option<PathBuf>,
    /// With --live: the live preset (hyper, lcm, turbo, lightning, plain).
    #[arg(long, default_value = "lcm", requires = "live")]
    live_preset: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Hands out normal(0, 0.02) tensors for any weight a model asks for, and keeps them by name so
/// adapters can be merged into them.
pub(super) struct RandomWeights(pub(super) Arc<Mutex<TensorMap>>);

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        // Variances must stay positive for normalisation layers to compute real numbers.
        let t = if name.ends_with("running_var") {
            Tensor::ones(s, dtype, dev)?
        } else {
            Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)?
        };
        if let Ok(mut map) = self.0.lock() {
            map.insert(name.to_string(), t.clone());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights have no shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

pub(super) const SD15_UNET: &str = r#"{"block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "attention_head_dim": 8, "layers_per_block": 2, "norm_num_groups": 32}"#;
/// SDXL base 1.0's published UNet config (its VAE has SD 1.5's shape).
const SDXL_UNET: &str = r#"{"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
    "use_linear_projection": true, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "layers_per_block": 2, "norm_num_groups": 32}"#;
pub(super) const SD15_VAE: &str = r#"{"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;

pub fn run(mut args: BenchArgs) -> anyhow::Result<ExitCode> {
    let sdxl = args.family == "sdxl";
    if args.sizes.is_empty() {
        args.sizes = if sdxl { vec![512, 1024] } else { vec![256, 512] };
    }
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    for &s in &args.sizes {
        anyhow::ensure!(s % 8 == 0 && s >= 64, "--sizes: {s} is not a multiple of 8 of at least 64");
    }
    let device = args.device.open()?;
    if !args.json {
        println!("machine: {}", easel::engine::kernels::machine::summary());
    }
    if args.live {
        return live(&args, &device);
    }
    let dtype = args.dtype.dtype_on(&device)?;
    let unet_cfg: UNetConfig = match &args.unet_config {
        Some(p) => read_json(p)?,
        None => serde_json::from_str(if sdxl { SDXL_UNET } else { SD15_UNET })?,
    };
    let recorded = Arc::new(Mutex::new(TensorMap::new()));
    let vb = VarBuilder::from_backend(Box::new(RandomWeights(Arc::clone(&recorded))), dtype, device.clone());
    let unet = UNet::new(vb.clone(), &unet_cfg)?;
    let unet_weights = recorded.lock().map(|m| m.clone()).unwrap_or_default();
    let mut unet_rows = Vec::new();
    for &size in &args.sizes {
        let context = Conditioning::stand_in(&unet_cfg, 77, (size, size), dtype, &device)?;
        let latent = size / 8;
        let x =
            Tensor::randn(0f32, 1.0, (1, unet_cfg.in_channels, latent, latent), &device)?.to_dtype(dtype)?;
        let secs = time_median(args.runs, &device, || {
            unet.forward(&x, 500.0, &context)?;
            Ok(())
        })?;
        if !args.json {
            println!("UNet {size}x{size} (latent {latent}): {secs:.3} s per evaluation");
        }
        unet_rows.push(json!({ "size": size, "secs_per_eval": secs }));
    }

    let mut lora_row = serde_json::Value::Null;
    if let Some(rank) = args.lora_rank {
        let size = *args.sizes.iter().max().unwrap_or(&512);
        let (adapter, modules) = random_adapter(&unet_weights, rank, &device)?;
        let context = Conditioning::stand_in(&unet_cfg, 77, (size, size), dtype, &device)?;
        let base = MergeBase {
            unet: &unet_weights,
            text: &TensorMap::new(),
            text_2: None,
            context_width: unet_cfg.cross_attention_dim,
            line: None,
            family: easel::engine::Family::of_unet(&unet_cfg),
            dtype,
            device: &device,
        };
        let mut weight = 0.0;
        let mut merged_unet = None;
        let reweight = time_median(args.runs, &device, || {
            weight += 0.25;
            let stack = [StackEntry::new(Arc::clone(&adapter), weight)];
            let merged = lora::merge(&base, &stack)?;
            merged_unet = Some(UNet::new(VarBuilder::from_tensors(merged.unet, dtype, &device), &unet_cfg)?);
            Ok(())
        })?;
        let merged_unet = merged_unet.ok_or_else(|| anyhow::anyhow!("no merge was timed"))?;
        let latent = size / 8;
        let x =
            Tensor::randn(0f32, 1.0, (1, unet_cfg.in_channels, latent, latent), &device)?.to_dtype(dtype)?;
        let with_lora = time_median(args.runs, &device, || {
            merged_unet.forward(&x, 500.0, &context)?;
            Ok(())
        })?;
        if !args.json {
            println!("LoRA rank {rank} on {modules} layers: re-weight {reweight:.3} s");
            println!("UNet {size}x{size} with the LoRA merged: {with_lora:.3} s per evaluation");
        }
        lora_row = json!({ "rank": rank, "modules": modules, "reweight_secs": reweight,
                           "size": size, "secs_per_eval_merged": with_lora });
    }

    let controlnet_row = if args.controlnet {
        let size = *args.sizes.iter().max().unwrap_or(&512);
        bench_controlnet(&unet, &unet_cfg, &vb, size, args.runs, &device, args.json)?
    } else {
        serde_json::Value::Null
    };

    let metrics_row =
        if args.metrics { bench_metrics(args.runs, &device, args.json)? } else { serde_json::Value::Null };

    let size = *args.sizes.iter().max().unwrap_or(&512);
    let decode_bench = DecodeBench { size, runs: args.runs, device: &device, dtype, quiet: args.json };
    let mut vae_row = serde_json::Value::Null;
    if args.vae {
        let vae_cfg: VaeConfig = match &args.vae_config {
            Some(p) => read_json(p)?,
            None => serde_json::from_str(SD15_VAE)?,
        };
        let vae = Vae::new(vb.clone(), &vae_cfg)?;
        vae_row = decode_bench.time("VAE decode", vae_cfg.latent_channels, |z| vae.decode(z))?;
    }
    let mut preview_row = serde_json::Value::Null;
    if args.preview {
        let cfg = TinyVaeConfig::default();
        let decoder = TinyDecoder::new(vb.clone(), &cfg, PathBuf::from("random"))?;
        preview_row =
            decode_bench.time("preview decode (TAESD)", cfg.latent_channels, |z| decoder.decode(z))?;
    }

    let peak = easel::memory::peak_rss_bytes();
    let report = json!({
        "family": args.family,
        "device": format!("{device:?}"),
        "dtype": args.dtype.id(),
        "threads": candle_core::utils::get_num_threads(),
        "machine": easel::engine::kernels::machine::summary(),
        "unet": unet_rows,
        "vae_decode": vae_row,
        "preview_decode": preview_row,
        "lora": lora_row,
        "controlnet": controlnet_row,
        "metrics": metrics_row,
        "peak_rss_bytes": peak,
        "version": easel::version(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match peak {
            Some(b) => println!("peak memory (RSS): {:.2} GB", b as f64 / 1e9),
            None => println!("peak memory: not available on this system"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One UNet evaluation with and without a ControlNet unit (random weights) at `size`².
fn bench_controlnet(
    unet: &UNet,
    cfg: &UNetConfig,
    vb: &VarBuilder,
    size: usize,
    runs: usize,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<serde_json::Value> {
    let dtype = vb.dtype();
    let net = easel::engine::controlnet::ControlNet::with_weights(
        vb.pp("controlnet"),
        cfg,
        std::path::Path::new("random"),
    )?;
    let context = Conditioning::stand_in(cfg, 77, (size, size), dtype, device)?;
    let latent = size / 8;
    let x = Tensor::randn(0f32, 1.0, (1, cfg.in_channels, latent, latent), device)?.to_dtype(dtype)?;
    let hint = Tensor::rand(0f32, 1.0, (1, 3, size, size), device)?.to_dtype(dtype)?;
    let plain = time_median(runs, device, || {
        unet.forward(&x, 500.0, &context)?;
        Ok(())
    })?;
    // A run encodes the map once; each step then costs the ControlNet's pass and the UNet's.
    let mut embedded = None;
    let encode = time_median(runs, device, || {
        embedded = Some(net.embed_hint(&hint)?);
        Ok(())
    })?;
    let embedded = embedded.ok_or_else(|| anyhow::anyhow!("the hint was not encoded"))?;
    let steered = time_median(runs, device, || {
        let residuals = net.forward_embedded(&x, 500.0, &context, &embedded)?;
        unet.forward_controlled(&x, 500.0, &context, Some(&residuals))?;
        Ok(())
    })?;
    if !quiet {
        println!(
            "UNet {size}x{size} with one ControlNet unit: {steered:.3} s per evaluation ({:.2}x the plain {plain:.3} s); \
             the map's encoding, once per run: {encode:.3} s",
            steered / plain
        );
    }
    Ok(json!({ "size": size, "secs_per_eval_plain": plain, "secs_per_eval_with_unit": steered,
               "ratio": steered / plain, "hint_encode_secs_once": encode }))
}

/// Times decoders of random latents at one picture size.
struct DecodeBench<'a> {
    size: usize,
    runs: usize,
    device: &'a Device,
    dtype: DType,
    quiet: bool,
}

impl DecodeBench<'_> {
    /// The median seconds `decode` takes for `channels`-channel latents, printed unless quiet, as
    /// the report's row.
    fn time(
        &self,
        what: &str,
        channels: usize,
        decode: impl Fn(&Tensor) -> easel::Result<Tensor>,
    ) -> anyhow::Result<serde_json::Value> {
        let (size, latent) = (self.size, self.size / 8);
        let z = Tensor::randn(0f32, 1.0, (1, channels, latent, latent), self.device)?.to_dtype(self.dtype)?;
        let secs = time_median(self.runs, self.device, || {
            decode(&z)?;
            Ok(())
        })?;
        if !self.quiet {
            println!("{what} {size}x{size}: {secs:.3} s");
        }
        Ok(json!({ "size": size, "secs": secs }))
    }
}

/// Feature extraction of a 512×512 picture (resize + Inception) and FID of 2048-d statistics.
fn bench_metrics(runs: usize, device: &Device, quiet: bool) -> anyhow::Result<serde_json::Value> {
    let vb = VarBuilder::from_backend(Box::new(RandomWeights(Arc::default())), DType::F32, device.clone());
    let net = FidInception::new(vb, device)?;
    let picture = image::RgbImage::from_fn(512, 512, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let per_picture = time_median(runs, device, || {
        let input = Tensor::from_vec(prepare(&picture, ResizeMode::PytorchFid), (1, 3, 299, 299), device)?;
        net.forward(&input)?;
        Ok(())
    })?;
    let features = |offset: f32| -> Vec<Vec<f32>> {
        (0..2100)
            .map(|i| (0..2048).map(|d| ((i * 31 + d * 17) % 97) as f32 * 0.01 + offset).collect())
            .collect()
    };
    let (a, b) = (Statistics::from_features(&features(0.0))?, Statistics::from_features(&features(0.1))?);
    let fid_secs = time_median(runs, device, || {
        frechet_distance(&a, &b)?;
        Ok(())
    })?;
    if !quiet {
        println!("Inception features: {:.2} pictures/s ({per_picture:.3} s each)", 1.0 / per_picture);
        println!("FID on 2048-d statistics: {fid_secs:.3} s");
    }
    Ok(
        json!({ "secs_per_picture": per_picture, "pictures_per_sec": 1.0 / per_picture, "fid_2048_secs": fid_secs }),
    )
}

/// A kohya-style adapter of `rank` on every attention, feed-forward and projection layer.
fn random_adapter(
    weights: &TensorMap,
    rank: usize,
    device: &Device,
) -> anyhow::Result<(Arc<Adapter>, usize)> {
    let targets =
        [".to_q", ".to_k", ".to_v", ".to_out.0", ".ff.net.0.proj", ".ff.net.2", ".proj_in", ".proj_out"];
    let mut modules = Vec::new();
    for (key, w) in weights {
        let Some(module) = key.strip_suffix(".weight") else { continue };
        if !targets.iter().any(|t| module.ends_with(t)) {
            continue;
        }
        let out = w.dim(0)?;
        let inner: usize = w.dims().iter().skip(1).product();
        modules.push(AdapterModule {
            target: Target::Unet,
            name: ModuleName::Dotted(module.to_string()),
            delta: Delta::LoRa {
                down: Tensor::randn(0f32, 0.02, (rank, inner), device)?,
                up: Tensor::randn(0f32, 0.02, (out, rank), device)?,
                alpha: Some(rank as f64),
            },
        });
    }
    let count = modules.len();
    let adapter = Adapter {
        name: "bench".into(),
        path: "bench.safetensors".into(),
        format: "kohya",
        modules,
        unknown_keys: Vec::new(),
        metadata: Default::default(),
        hash: String::new(),
    };
    Ok((Arc::new(adapter), count))
}

/// One warm-up run, then the median of `runs` timed runs, in seconds.
fn time_median(
    runs: usize,
    device: &Device,
    mut f: impl FnMut() -> easel::Result<()>,
) -> anyhow::Result<f64> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// The middle value (the upper one of an even count); 0 for none.
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `--live`: the live painting latency bench (`bench_live.rs`).
#[cfg(feature = "gui")]
fn live(args: &BenchArgs, device: &Device) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.model.is_some() || args.family == "sd15",
        "--live builds a random SD 1.5; for SDXL give an SDXL model with --model"
    );
    anyhow::ensure!(
        easel::engine::live::LIVE_PRESETS.iter().any(|p| p.id == args.live_preset),
        "--live-preset: {:?} is not one of hyper, lcm, turbo, lightning, plain",
        args.live_preset
    );
    let report = super::bench_live::run(&super::bench_live::LiveBench {
        model: args.model.as_deref(),
        taesd: args.taesd.as_deref(),
        sizes: &args.sizes,
        runs: args.runs,
        preset: &args.live_preset,
        device,
        precision: args.dtype,
        quiet: args.json,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--live` measures the studio's own path, which this build leaves out.
#[cfg(not(feature = "gui"))]
fn live(_: &BenchArgs, _: &Device) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "--live measures the studio's live painting; this easel was built without the studio (feature gui)"
    )
}
