//! Bad input never crashes: each case exits non-zero with one clear sentence naming the problem,
//! and no output file appears.

mod common;

use std::path::Path;

use common::*;

/// Runs `generate` with the tiny model and `extra` flags; returns (stderr, output path existed).
fn generate_with(dir: &Path, model: &Path, extra: &[&str]) -> (String, bool) {
    let out = dir.join("out.png");
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt",
        "a cat",
        "--steps",
        "2",
        "--height",
        "64",
        "-o",
        out.to_str().expect("utf-8"),
    ];
    if !extra.contains(&"--width") {
        args.extend_from_slice(&["--width", "64"]);
    }
    args.extend_from_slice(extra);
    let res = easel(&args);
    assert!(!res.status.success(), "expected failure for {extra:?}");
    let err = stderr(&res);
    assert!(err.starts_with("error: "), "one error sentence expected, got: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(!err.contains("panicked"), "{err}");
    (err, out.exists())
}

fn tiny() -> std::path::PathBuf {
    fixtures().join("tiny-sd")
}

#[test]
fn missing_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (err, wrote) = generate_with(dir.path(), &dir.path().join("nowhere"), &[]);
    assert!(err.contains("model not found") && err.contains("nowhere"), "{err}");
    assert!(!wrote);
}

#[test]
fn wrong_file_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a model").expect("write");
    let (err, _) = generate_with(dir.path(), &notes, &[]);
    assert!(err.contains("not a model file") && err.contains("notes.txt"), "{err}");
}

#[test]
fn folder_that_is_not_a_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (err, _) = generate_with(dir.path(), dir.path(), &[]);
    assert!(err.contains("model_index.json"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(fixtures().join("tiny-sd.safetensors")).expect("fixture");
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let (err, _) = generate_with(dir.path(), &cut, &[]);
    assert!(err.contains("truncated") && err.contains("cut.safetensors"), "{err}");
}

#[test]
fn garbage_ckpt_is_refused_without_running_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ckpt = dir.path().join("model.ckpt");
    std::fs::write(&ckpt, b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.").expect("write");
    let (err, _) = generate_with(dir.path(), &ckpt, &[]);
    assert!(err.contains("never runs pickle code") && err.contains("model.ckpt"), "{err}");
}

#[test]
fn size_not_a_multiple_of_eight() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (err, _) = generate_with(dir.path(), &tiny(), &["--width", "100"]);
    assert!(err.contains("--width 100") && err.contains("multiples of 8"), "{err}");
}

#[test]
fn unknown_sampler() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (err, _) = generate_with(dir.path(), &tiny(), &["--sampler", "heun_fast"]);
    assert!(err.contains("unknown sampler") && err.contains("dpmpp_2m_karras"), "{err}");
}

#[test]
fn unreadable_init_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("start.png");
    std::fs::write(&bad, "this is text").expect("write");
    let (err, _) = generate_with(dir.path(), &tiny(), &["--init-image", bad.to_str().expect("utf-8")]);
    assert!(err.contains("cannot read the init image") && err.contains("start.png"), "{err}");
}

#[test]
fn unreadable_mask() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("mask.png");
    std::fs::write(&bad, [0u8, 1, 2, 3]).expect("write");
    let init = fixtures().join("golden/ddim.png");
    let (err, _) = generate_with(
        dir.path(),
        &tiny(),
        &["--init-image", init.to_str().expect("utf-8"), "--mask", bad.to_str().expect("utf-8")],
    );
    assert!(err.contains("cannot read the mask") && err.contains("mask.png"), "{err}");
}

#[test]
fn missing_init_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (err, _) = generate_with(dir.path(), &tiny(), &["--init-image", "/no/such/picture.png"]);
    assert!(err.contains("init image not found"), "{err}");
}

#[test]
fn noise_of_the_wrong_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let noise = fixtures().join("noise.safetensors");
    let (err, _) = generate_with(dir.path(), &tiny(), &["--noise", noise.to_str().expect("utf-8")]);
    assert!(err.contains("--noise") && err.contains("[1, 4, 8, 8]"), "{err}");
}

#[test]
fn existing_output_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    std::fs::write(&out, "precious work").expect("write");
    let res = easel(&[
        "generate",
        "--model",
        tiny().to_str().expect("utf-8"),
        "--prompt",
        "a cat",
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!res.status.success());
    assert!(stderr(&res).contains("already exists"), "{}", stderr(&res));
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "precious work");
}
