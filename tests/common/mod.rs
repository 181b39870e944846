//! Helpers shared by the integration tests: run the real `easel` binary, find fixtures, compare
//! pictures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// As [`generate_golden_settings`], computing in `dtype`.
pub fn generate_golden_settings_in(model: &Path, sampler: &str, dtype: &str, out: &Path) {
    let noise = fixtures().join("noise.safetensors");
    let res = easel(&[
        "generate",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        PROMPT,
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
        "--device",
        "cpu",
        "--dtype",
        dtype,
        "--noise",
        noise.to_str().expect("utf-8 path"),
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(res.status.success(), "generate failed: {}", stderr(&res));
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
