//! Hostile files never abort an evaluation: `easel eval` on folders and statistics crafted here
//! (pairs SSIM cannot compare, a sparse 3 GiB "picture", a header declaring 20000² pixels,
//! statistics declaring TiBs or holding NaN) lists or refuses each with a sentence and measures the
//! rest.

mod common;

use std::io::{Cursor, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use image::RgbImage;
use serde_json::Value;

fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut s = seed;
    RgbImage::from_fn(w, h, |x, y| {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n = (s >> 16) as u8 % 64;
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8].map(|v| v.wrapping_add(n)))
    })
}

/// A PNG whose header declares `side`×`side` pixels, with a valid checksum and no pixel data.
fn png_declaring(side: u32) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    RgbImage::new(1, 1).write_to(&mut bytes, image::ImageFormat::Png).expect("encoded");
    let mut bytes = bytes.into_inner();
    bytes[16..20].copy_from_slice(&side.to_be_bytes());
    bytes[20..24].copy_from_slice(&side.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn pairs_that_cannot_be_compared_and_oversized_files_are_listed_and_the_rest_measured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (reference, generated) = (dir.path().join("reference"), dir.path().join("generated"));
    std::fs::create_dir_all(&reference).expect("folder");
    std::fs::create_dir_all(&generated).expect("folder");
    let good: Vec<(RgbImage, RgbImage)> = (0..3).map(|i| (noise(40, 32, i), noise(40, 32, 10 + i))).collect();
    for (i, (a, b)) in good.iter().enumerate() {
        a.save(reference.join(format!("good_{i}.png"))).expect("saved");
        b.save(generated.join(format!("good_{i}.png"))).expect("saved");
    }
    // Too small for SSIM's window, and a pair of different sizes.
    noise(4, 4, 1).save(reference.join("tiny.png")).expect("saved");
    noise(4, 4, 2).save(generated.join("tiny.png")).expect("saved");
    noise(40, 32, 3).save(reference.join("sized.png")).expect("saved");
    noise(32, 40, 4).save(generated.join("sized.png")).expect("saved");
    // A reference that cannot be read, and its generated partner.
    std::fs::write(reference.join("lost.png"), b"not a picture").expect("written");
    noise(40, 32, 5).save(generated.join("lost.png")).expect("saved");
    // Sparse: 3 GiB long, no disk used; reading it whole would take 3 GiB of memory.
    std::fs::File::create(generated.join("big.png")).expect("created").set_len(3 << 30).expect("sized");
    std::fs::write(generated.join("huge.png"), png_declaring(20_000)).expect("written");

    let out = dir.path().join("report.json");
    let res = easel(&[
        "eval",
        "--reference",
        path_str(&reference),
        "--generated",
        path_str(&generated),
        "--inception",
        path_str(formula_weights()),
        "--device",
        &test_device(),
        "--no-cache",
        "--is-splits",
        "2",
        "--json",
        path_str(&out),
    ]);
    let err = stderr(&res);
    assert!(res.status.success(), "{err}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("json")).expect("json");
    let set = &report["sets"][0];

    assert_eq!(set["pairs"], 3, "{set}");
    let ssim = good.iter().map(|(a, b)| easel::metrics::pixel::ssim(a, b).expect("ssim")).sum::<f64>() / 3.0;
    let psnr = good.iter().map(|(a, b)| easel::metrics::pixel::psnr(a, b).expect("psnr")).sum::<f64>() / 3.0;
    assert!((set["ssim"].as_f64().expect("ssim") - ssim).abs() < 1e-12, "{set}");
    assert!((set["psnr"].as_f64().expect("psnr") - psnr).abs() < 1e-9, "{set}");

    let skipped = set["skipped_pairs"].to_string();
    assert_eq!(set["skipped_pairs"].as_array().map(Vec::len), Some(3), "{skipped}");
    assert!(skipped.contains("tiny.png: SSIM needs pictures of at least 6×6"), "{skipped}");
    assert!(skipped.contains("sized.png: 32×40 against a 40×32 reference"), "{skipped}");
    assert!(skipped.contains("lost.png: its reference"), "{skipped}");

    let unreadable = set["unreadable"].to_string();
    assert_eq!(set["unreadable"].as_array().map(Vec::len), Some(2), "{unreadable}");
    assert!(unreadable.contains("big.png") && unreadable.contains("3.0 GiB"), "{unreadable}");
    assert!(unreadable.contains("huge.png") && unreadable.contains("20000×20000"), "{unreadable}");
    // The good pairs, the tiny and the mismatched pictures, and lost.png have features.
    assert_eq!(set["count"], 6, "{set}");

    // The table's notes name every skipped pair and file, one line each.
    for needle in [
        "skipped pair for PSNR/SSIM",
        "tiny.png: SSIM needs",
        "sized.png: 32×40",
        "skipped unreadable reference",
        "big.png",
        "huge.png",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    assert_eq!(err.matches("skipped pair for PSNR/SSIM").count(), 3, "{err}");
}

/// `.npy` bytes as NumPy writes them (version 1).
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// An `.npz` as `np.savez_compressed` writes it.
fn npz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(format!("{name}.npy"), options).expect("entry");
        zip.write_all(bytes).expect("written");
    }
    zip.finish().expect("finished").into_inner()
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `easel eval --reference-stats` on these bytes; the Inception weights are not needed,
/// because the statistics are refused before the network loads.
fn eval_statistics(bytes: &[u8]) -> (bool, String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("stats.npz");
    std::fs::write(&stats, bytes).expect("written");
    let generated = fixtures().join("metrics/generated_b");
    let started = Instant::now();
    let res = easel(&[
        "eval",
        "--reference-stats",
        path_str(&stats),
        "--generated",
        path_str(&generated),
        "--inception",
        "/nowhere/pt_inception.pth",
        "--no-cache",
    ]);
    (res.status.success(), stderr(&res), started.elapsed())
}

#[test]
fn statistics_declaring_terabytes_are_refused_at_once() {
    // A valid mu, then a sigma declaring 2²⁰ × 2²⁰ float64 values (8 TiB) in a few hundred bytes.
    let bytes = npz(&[
        ("mu", npy("<f8", "(2,)", &f64s(&[0.0, 1.0]))),
        ("sigma", npy("<f8", "(1048576, 1048576)", &[])),
    ]);
    assert!(bytes.len() < 400, "a tiny file: {} bytes", bytes.len());
    let (ok, err, took) = eval_statistics(&bytes);
    assert!(!ok);
    assert!(err.contains("cannot use these FID statistics") && err.contains("stats.npz"), "{err}");
    assert!(
        err.contains("`sigma` array declares shape (1048576, 1048576)") && err.contains("128 MiB"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn statistics_holding_nan_are_refused_with_a_sentence() {
    let bytes = npz(&[
        ("mu", npy("<f8", "(2,)", &f64s(&[0.5, f64::NAN]))),
        ("sigma", npy("<f8", "(2, 2)", &f64s(&[1.0, 0.0, 0.0, 1.0]))),
    ]);
    let (ok, err, _) = eval_statistics(&bytes);
    assert!(!ok);
    assert!(err.contains("mu holds NaN") && err.contains("write them again"), "{err}");
}

#[test]
fn garbage_statistics_are_refused_with_a_sentence() {
    let (ok, err, _) = eval_statistics(b"PK\x03\x04 this is not really a zip");
    assert!(!ok);
    assert!(err.contains("cannot use these FID statistics") && err.contains("not an .npz"), "{err}");
}
