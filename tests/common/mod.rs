//! Helpers shared by the integration tests: run the real `easel` binary, find fixtures, compare
//! pictures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const PROMPT: &str = "a watercolor painting of a lighthouse at dusk";
pub const NEGATIVE: &str = "blurry, lowres";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn easel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the easel binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Generates with the golden settings (12 steps, CFG 7.5, 128², fixed noise) into `out`.
pub fn generate_golden_settings(model: &Path, sampler: &str, out: &Path) {
    generate_golden_settings_in(model, sampler, "f32", out);
}

/// As [`generate_golden_settings`], computing in `dtype` on [`test_device`].
pub fn generate_golden_settings_in(model: &Path, sampler: &str, dtype: &str, out: &Path) {
    let mut args = golden_args(model, PROMPT, sampler, out);
    args.extend(["--device".into(), test_device(), "--dtype".into(), dtype.into()]);
    let res = easel_owned(&args);
    assert!(res.status.success(), "generate failed: {}", stderr(&res));
}

/// The device the parity and metric tests compute on: the CPU, unless `EASEL_TEST_DEVICE` names
/// another (`EASEL_TEST_DEVICE=cuda cargo test --features cuda` checks a GPU build against the
/// same goldens; CI has no GPU).
pub fn test_device() -> String {
    std::env::var("EASEL_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// `easel generate` arguments with the golden settings (the shared negative prompt, 12 steps,
/// CFG 7.5, 128², the fixed noise); tests add their own flags.
pub fn golden_args(model: &Path, prompt: &str, sampler: &str, out: &Path) -> Vec<String> {
    let noise = fixtures().join("noise.safetensors");
    [
        "generate",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        prompt,
        "--negative",
        NEGATIVE,
        "--sampler",
        sampler,
        "--steps",
        "12",
        "--cfg",
        "7.5",
        "--width",
        "128",
        "--height",
        "128",
        "--noise",
        noise.to_str().expect("utf-8 path"),
        "-o",
        out.to_str().expect("utf-8 path"),
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `easel` with owned arguments.
pub fn easel_owned(args: &[String]) -> Output {
    easel(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Copies a folder tree (the tests assemble model variants from the fixtures this way).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create");
    for entry in std::fs::read_dir(src).expect("list") {
        let entry = entry.expect("entry");
        let target = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

pub fn load_rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display())).to_rgb8()
}

/// (PSNR in dB, largest channel difference) between two pictures of the same size.
pub fn compare(a: &image::RgbImage, b: &image::RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions(), "pictures differ in size");
    let mut sq = 0f64;
    let mut max = 0u8;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sq += f64::from(d) * f64::from(d);
    }
    let mse = sq / a.as_raw().len() as f64;
    let psnr = if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() };
    (psnr, max)
}

/// The parity bar the project set: within 3/255 everywhere and PSNR ≥ 40 dB.
pub fn assert_matches_golden(out: &Path, golden: &Path) {
    let (psnr, max) = compare(&load_rgb(out), &load_rgb(golden));
    assert!(
        max <= 3 && psnr >= 40.0,
        "{} differs from {}: PSNR {psnr:.1} dB, max difference {max}/255",
        out.display(),
        golden.display()
    );
}

/// splitmix64 of (stream << 32) + i, as uniforms in [0, 1), exactly as the fixture script draws them.
pub fn splitmix_uniform(n: usize, stream: u64) -> impl Iterator<Item = f64> {
    (0..n as u64).map(move |i| {
        let mut z = i.wrapping_add(stream << 32).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / 9_007_199_254_740_992.0
    })
}

/// The formula FID Inception weights, written once per test run as safetensors.
pub fn formula_weights() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let text =
            std::fs::read_to_string(fixtures().join("metrics/inception_manifest.json")).expect("manifest");
        let manifest: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).expect("json");
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (k, (name, shape)) in manifest.iter().enumerate() {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let n: usize = shape.iter().product();
            let values = splitmix_uniform(n, k as u64 + 1).map(|u| {
                let v = if name.ends_with("conv.weight") {
                    let fan_in: usize = shape[1..].iter().product();
                    (2.0 * u - 1.0) * (6.0 / fan_in as f64).sqrt()
                } else if name.ends_with("bn.weight") {
                    1.0 + 0.2 * (u - 0.5)
                } else if name.ends_with("bn.running_var") {
                    1.0 + 0.5 * u
                } else if name.ends_with("fc.weight") {
                    (2.0 * u - 1.0) * 1.0
                } else {
                    0.1 * (u - 0.5)
                };
                v as f32
            });
            tensors.push((name.clone(), shape.clone(), values.flat_map(f32::to_le_bytes).collect()));
        }
        let views = tensors.iter().map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .expect("valid tensor");
            (name.clone(), view)
        });
        // The content never changes, so one copy in cargo's test scratch folder serves every run.
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("formula-inception.safetensors");
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        safetensors::serialize_to_file(views, None, &tmp).expect("written");
        std::fs::rename(&tmp, &path).expect("moved into place");
        path
    })
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_difference(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .expect("same shape")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar")
}

/// `easel generate` arguments making what a live frame of the tiny model is with the LCM preset:
/// 64², 6 LCM steps at strength 0.5 from `init`, no guidance, the tiny TAESD as the autoencoder.
pub fn live_frame_args(prompt: &str, seed: u64, init: &Path, out: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    [
        "generate",
        "--model",
        &path(&fixtures().join("tiny-sd")),
        "--prompt",
        prompt,
        "--sampler",
        "lcm",
        "--steps",
        "6",
        "--cfg",
        "1",
        "--seed",
        &seed.to_string(),
        "--strength",
        "0.5",
        "--width",
        "64",
        "--height",
        "64",
        "--init-image",
        &path(init),
        "--vae",
        &path(&fixtures().join("tiny-taesd")),
        "-o",
        &path(out),
    ]
    .map(String::from)
    .to_vec()
}
