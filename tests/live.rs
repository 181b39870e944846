//! Live painting's engine and worker: TAESD's encoder and img2img with the tiny autoencoder
//! against diffusers (goldens by tests/fixtures/make_live_fixtures.py), a live frame against
//! `easel generate` with the same settings, the text cache, and stale frames cancelled.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use common::*;
use easel::engine::device::{DeviceChoice, Precision};
use easel::engine::live::LivePreset;
use easel::engine::tiny_vae::TinyAutoencoder;
use easel::engine::weights::read_safetensors;
use easel::engine::{Family, GenerationRequest};
use easel::worker::{Command, Event, FrameDone, JobOutcome, LiveJob, Worker};

fn device() -> Device {
    let choice: DeviceChoice = test_device().parse().expect("a device name");
    choice.open().expect("the test device opens")
}

fn taesd() -> std::path::PathBuf {
    fixtures().join("tiny-taesd")
}

#[test]
fn the_tiny_encoder_encodes_as_diffusers_does() {
    let cases = read_safetensors(&fixtures().join("golden/taesd_encode.safetensors")).expect("golden");
    let on = |name: &str| cases[name].to_device(&device()).expect("to device");
    let autoencoder = TinyAutoencoder::load(&taesd(), &device(), DType::F32).expect("TAESD loads");
    let latents =
        autoencoder.encoder().expect("the folder has an encoder").encode(&on("pixels")).expect("encodes");
    let expected = on("latents");
    assert_eq!(latents.dims(), &[1, 4, 8, 6]);
    let diff = max_difference(&latents, &expected);
    assert!(diff < 1e-4, "largest difference from diffusers: {diff}");
    // The goldens' latents vary, so a wrong layer would show.
    let spread =
        expected.flatten_all().and_then(|t| t.var(0)).and_then(|t| t.to_scalar::<f32>()).expect("var");
    assert!(spread > 0.1, "variance {spread}");
}

#[test]
fn a_decoder_file_alone_cannot_encode_and_says_what_to_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let decoder = dir.path().join("taesd_decoder.safetensors");
    std::fs::copy(taesd().join("taesd_decoder.safetensors"), &decoder).expect("copy");
    let autoencoder = TinyAutoencoder::load(&decoder, &Device::Cpu, DType::F32).expect("the decoder loads");
    let message = autoencoder.encoder().err().expect("no encoder").to_string();
    assert!(message.contains("taesd_encoder.safetensors"), "{message}");
}

/// The live goldens' settings, as `easel generate` arguments writing to `out`.
fn live_case_args(case: &serde_json::Value, out: &Path) -> Vec<String> {
    let s = |k: &str| case[k].to_string().trim_matches('"').to_string();
    let path = |p: &Path| p.display().to_string();
    [
        "generate",
        "--model",
        &path(&fixtures().join("tiny-sd")),
        "--prompt",
        &s("prompt"),
        "--sampler",
        &s("sampler"),
        "--steps",
        &s("steps"),
        "--cfg",
        &s("cfg"),
        "--seed",
        &s("seed"),
        "--strength",
        &s("strength"),
        "--width",
        &s("width"),
        "--height",
        &s("height"),
        "--init-image",
        &path(&fixtures().join("golden/ddim.png")),
        "--device",
        &test_device(),
        "-o",
        &path(out),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn img2img_with_the_tiny_autoencoder_matches_diffusers() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("golden/live_cases.json")).expect("cases"),
    )
    .expect("json");
    let dir = tempfile::tempdir().expect("temp dir");
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let out = dir.path().join(format!("{name}.png"));
        let mut args = live_case_args(case, &out);
        args.extend(["--vae".into(), taesd().display().to_string()]);
        let res = easel_owned(&args);
        assert!(res.status.success(), "{name}: {}", stderr(&res));
        let golden = fixtures().join(format!("golden/{name}.png"));
        let (psnr, max) = compare(&load_rgb(&out), &load_rgb(&golden));
        assert!(max <= 1, "{name}: {max}/255 from diffusers ({psnr:.1} dB)");
        // The same run through the full VAE is another picture: the tiny autoencoder was used.
        let full = dir.path().join(format!("{name}_full.png"));
        let res = easel_owned(&live_case_args(case, &full));
        assert!(res.status.success(), "{name}: {}", stderr(&res));
        let (psnr, _) = compare(&load_rgb(&full), &load_rgb(&golden));
        assert!(psnr < 30.0, "{name}: the full VAE's picture is {psnr:.1} dB from the tiny one's");
    }
}

/// A worker with the tiny model loaded.
fn worker_with_model() -> Worker {
    let worker = Worker::spawn(Box::new(|| {})).expect("the worker starts");
    let source = fixtures().join("tiny-sd").display().to_string();
    worker
        .send(Command::LoadModel { source, device: DeviceChoice::Cpu, precision: Precision::F32 })
        .expect("sent");
    loop {
        match next_event(&worker) {
            Event::ModelLoaded(_) => return worker,
            Event::ModelFailed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
}

fn next_event(worker: &Worker) -> Event {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(event) = worker.try_recv() {
            return event;
        }
        assert!(Instant::now() < deadline, "no event from the worker");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The next live frame's outcome.
fn live_outcome(worker: &Worker) -> Result<FrameDone, JobOutcome> {
    loop {
        match next_event(worker) {
            Event::LiveFrame(done) => return Ok(*done),
            Event::LiveStopped { outcome, .. } => return Err(outcome),
            _ => {}
        }
    }
}

/// A live frame's request as the studio makes it: the LCM preset, the canvas at half strength,
/// the tiny autoencoder, the seed as set.
fn frame_request(prompt: &str) -> GenerationRequest {
    let mut request = GenerationRequest {
        prompt: prompt.into(),
        seed: 11,
        width: 64,
        height: 64,
        strength: 0.5,
        vae: Some(taesd()),
        ..GenerationRequest::default()
    };
    LivePreset::by_id("lcm", Family::Sd1).apply(&mut request);
    request
}

fn live_job(id: u64, request: GenerationRequest, canvas: &image::RgbImage) -> LiveJob {
    LiveJob {
        id,
        request,
        canvas: canvas.clone(),
        cancel: Arc::new(AtomicBool::new(false)),
        asked: Instant::now(),
    }
}

/// A canvas sketch: white with a dark diagonal band.
fn sketch() -> image::RgbImage {
    image::RgbImage::from_fn(64, 64, |x, y| {
        if (x as i32 - y as i32).abs() < 6 {
            image::Rgb([30, 40, 90])
        } else {
            image::Rgb([250, 245, 235])
        }
    })
}

#[test]
fn a_live_frame_is_the_picture_easel_generate_makes_with_the_same_settings() {
    let worker = worker_with_model();
    let canvas = sketch();
    let request = frame_request("a lighthouse, ink");
    worker.send(Command::Live(Box::new(live_job(1, request.clone(), &canvas)))).expect("sent");
    let first = live_outcome(&worker).expect("a frame");
    assert!(first.timings.text_secs > 0.0, "the first frame encodes the prompt");
    assert_eq!(first.timings.steps, 3, "6 steps at strength 0.5");

    // The same settings through the command line, from the canvas saved as a picture.
    let dir = tempfile::tempdir().expect("temp dir");
    let init = dir.path().join("canvas.png");
    canvas.save(&init).expect("save");
    let out = dir.path().join("generated.png");
    let res = easel_owned(&live_frame_args("a lighthouse, ink", 11, &init, &out));
    assert!(res.status.success(), "{}", stderr(&res));
    assert_eq!(load_rgb(&out).as_raw(), first.image.as_raw(), "the frame is the generated picture");

    // The next frame of the same prompt reuses its embeddings; another prompt encodes again.
    worker.send(Command::Live(Box::new(live_job(2, request.clone(), &canvas)))).expect("sent");
    let again = live_outcome(&worker).expect("a frame");
    assert_eq!(again.timings.text_secs, 0.0, "cached embeddings");
    assert_eq!(again.image.as_raw(), first.image.as_raw(), "a locked seed gives a stable frame");
    worker
        .send(Command::Live(Box::new(live_job(3, frame_request("a harbour, ink"), &canvas))))
        .expect("sent");
    let other = live_outcome(&worker).expect("a frame");
    assert!(other.timings.text_secs > 0.0, "a new prompt is encoded");
    assert_ne!(other.image.as_raw(), first.image.as_raw());
}

#[test]
fn a_stale_frame_is_skipped_or_stopped_within_a_step() {
    let worker = worker_with_model();
    let canvas = sketch();
    // Cancelled before it starts: skipped without rendering.
    let job = live_job(1, frame_request("a lighthouse"), &canvas);
    job.cancel.store(true, Ordering::SeqCst);
    worker.send(Command::Live(Box::new(job))).expect("sent");
    assert_eq!(live_outcome(&worker).err(), Some(JobOutcome::Cancelled));

    // A long frame (1000 Euler steps) cancelled while it runs stops at its next step.
    let mut long = frame_request("a lighthouse");
    long.sampler = easel::engine::SamplerKind::Euler;
    long.steps = 1000;
    long.strength = 1.0;
    let job = live_job(2, long, &canvas);
    let cancel = Arc::clone(&job.cancel);
    worker.send(Command::Live(Box::new(job))).expect("sent");
    std::thread::sleep(Duration::from_millis(300));
    let cancelled_at = Instant::now();
    cancel.store(true, Ordering::SeqCst);
    assert_eq!(live_outcome(&worker).err(), Some(JobOutcome::Cancelled));
    assert!(cancelled_at.elapsed() < Duration::from_secs(3), "stopped within a step");

    // A frame that cannot be made says why.
    let mut broken = frame_request("a lighthouse");
    broken.vae = Some(fixtures().join("no-such-taesd"));
    worker.send(Command::Live(Box::new(live_job(3, broken, &canvas)))).expect("sent");
    match live_outcome(&worker) {
        Err(JobOutcome::Failed(message)) => assert!(message.contains("no-such-taesd"), "{message}"),
        other => panic!("expected a failure, got {:?}", other.map(|f| f.id)),
    }
}

#[test]
fn a_tiny_autoencoder_for_other_latents_is_refused_by_name() {
    use easel::engine::config::TinyVaeConfig;
    use easel::engine::tiny_vae::{TinyDecoder, TinyEncoder};
    // A TAESD for 16-channel latents (as SD3's and FLUX's are), 8 channels wide.
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("taesd3");
    std::fs::create_dir_all(&folder).expect("folder");
    let cfg = TinyVaeConfig {
        latent_channels: 16,
        encoder_block_out_channels: vec![8; 4],
        decoder_block_out_channels: vec![8; 4],
        ..TinyVaeConfig::default()
    };
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    TinyEncoder::new(vb.pp("encoder.layers"), &cfg, "random".into()).expect("encoder");
    TinyDecoder::new(vb.pp("decoder.layers"), &cfg, "random".into()).expect("decoder");
    varmap.save(folder.join("diffusion_pytorch_model.safetensors")).expect("save");
    std::fs::write(
        folder.join("config.json"),
        r#"{"_class_name": "AutoencoderTiny", "latent_channels": 16,
            "encoder_block_out_channels": [8, 8, 8, 8], "decoder_block_out_channels": [8, 8, 8, 8]}"#,
    )
    .expect("config");
    let out = dir.path().join("out.png");
    let mut args = live_frame_args("a lighthouse", 1, &fixtures().join("golden/ddim.png"), &out);
    let at = args.iter().position(|a| a == "--vae").expect("--vae") + 1;
    args[at] = folder.display().to_string();
    let res = easel_owned(&args);
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("taesd3") && err.contains("16-channel") && err.contains("TAESDXL"), "{err}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_scribble_unit_reads_each_frames_canvas() {
    use easel::engine::controlnet::{ControlSpec, Preprocessor};
    let worker = worker_with_model();
    let canvas = sketch();
    let unit = ControlSpec {
        model: fixtures().join("controlnet/sd15"),
        image: None,
        preprocess: Preprocessor::Scribble { threshold: 64 },
        ..ControlSpec::default()
    };
    let plain = frame_request("a lighthouse, ink");
    let steered = GenerationRequest { controls: vec![unit], ..plain.clone() };
    worker.send(Command::Live(Box::new(live_job(1, plain, &canvas)))).expect("sent");
    let without = live_outcome(&worker).expect("a frame");
    worker.send(Command::Live(Box::new(live_job(2, steered.clone(), &canvas)))).expect("sent");
    let with = live_outcome(&worker).expect("a frame");
    let (psnr, _) = compare(&without.image, &with.image);
    assert!(psnr < 45.0, "the unit changed the frame only {psnr:.1} dB");
    // The unit read this frame's canvas: the same as giving the saved canvas as its picture.
    let dir = tempfile::tempdir().expect("temp dir");
    let init = dir.path().join("canvas.png");
    canvas.save(&init).expect("save");
    let out = dir.path().join("generated.png");
    let mut args = live_frame_args("a lighthouse, ink", 11, &init, &out);
    let model = fixtures().join("controlnet/sd15");
    args.extend([
        "--control".to_string(),
        format!("model={},image={},preprocess=scribble", model.display(), init.display()),
    ]);
    let res = easel_owned(&args);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_eq!(load_rgb(&out).as_raw(), with.image.as_raw());
    // Another canvas, another frame.
    let mut other = canvas.clone();
    for x in 0..64 {
        for y in 28..36 {
            other.put_pixel(x, y, image::Rgb([20, 20, 20]));
        }
    }
    worker.send(Command::Live(Box::new(live_job(3, steered, &other)))).expect("sent");
    let moved = live_outcome(&worker).expect("a frame");
    assert_ne!(moved.image.as_raw(), with.image.as_raw());
}
