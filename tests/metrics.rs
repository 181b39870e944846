//! Metrics against the reference tools: golden values from tests/fixtures/make_metric_fixtures.py
//! (pytorch-fid 0.3.0, torch-fidelity 0.4.0, torchmetrics 1.9) on crops of scikit-image's photos,
//! with FID Inception weights both sides compute from the same seeded formula.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

fn metrics_dir() -> PathBuf {
    fixtures().join("metrics")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(metrics_dir().join("golden.json")).expect("fixture"))
        .expect("json")
}

/// One feature cache for the whole run: later evaluations of the same pictures read it, which also
/// checks that cached features give the same numbers as fresh ones.
fn shared_cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("feature-cache-{}", std::process::id()))
    })
}

fn eval(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report.json");
    let m = metrics_dir();
    let device = test_device();
    let mut args: Vec<String> = [
        "eval",
        "--reference",
        m.join("reference").to_str().expect("utf-8"),
        "--generated",
        m.join("generated_a").to_str().expect("utf-8"),
        "--generated",
        m.join("generated_b").to_str().expect("utf-8"),
        "--inception",
        formula_weights().to_str().expect("utf-8"),
        "--device",
        &device,
        "--json",
        out.to_str().expect("utf-8"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    let res = Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(&args)
        .env("XDG_CACHE_HOME", shared_cache())
        .output()
        .expect("runs");
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("json written")).expect("json");
    report
}

fn close(ours: f64, theirs: f64, rel: f64, what: &str) {
    assert!((ours - theirs).abs() <= rel * theirs.abs(), "{what}: Easel {ours} vs reference {theirs}");
}

#[test]
fn pytorch_fid_mode_matches_pytorch_fid_and_torchmetrics() {
    let report = eval(&[]);
    let g = golden();
    for (i, set) in ["generated_a", "generated_b"].iter().enumerate() {
        let ours = &report["sets"][i];
        let theirs = &g[set];
        close(
            ours["fid"].as_f64().expect("fid"),
            theirs["pytorch_fid"]["fid"].as_f64().expect("golden"),
            1e-3,
            set,
        );
        assert_eq!(ours["count"], theirs["count"], "{set}: readable pictures");
        assert_eq!(ours["pairs"], theirs["pairs"], "{set}: pairs");
    }
    let a = &report["sets"][0];
    let ga = &g["generated_a"];
    let psnr = a["psnr"].as_f64().expect("psnr");
    assert!((psnr - ga["psnr"].as_f64().expect("golden")).abs() < 0.01, "PSNR {psnr} vs {}", ga["psnr"]);
    let ssim = a["ssim"].as_f64().expect("ssim");
    assert!((ssim - ga["ssim"].as_f64().expect("golden")).abs() < 0.002, "SSIM {ssim} vs {}", ga["ssim"]);
    assert_eq!(
        a["unreadable"].as_array().map(Vec::len),
        Some(1),
        "broken.png is listed: {}",
        a["unreadable"]
    );
    assert_eq!(a["unpaired"].as_array().map(Vec::len), Some(4), "{}", a["unpaired"]);
    assert!(a["warnings"].to_string().contains("rank-deficient"), "{}", a["warnings"]);
}

#[test]
fn tf1_mode_matches_torch_fidelity() {
    let report = eval(&["--resize", "tf1", "--kid-subset-size", "12"]);
    let g = golden();
    for (i, set) in ["generated_a", "generated_b"].iter().enumerate() {
        let ours = &report["sets"][i];
        let theirs = &g[set]["torch_fidelity"];
        close(
            ours["fid"].as_f64().expect("fid"),
            theirs["fid"].as_f64().expect("golden"),
            1e-3,
            &format!("{set} FID"),
        );
        let is = ours["inception_score"]["mean"].as_f64().expect("is");
        close(is, theirs["is_mean"].as_f64().expect("golden"), 1e-2, &format!("{set} IS"));
        let kid = ours["kid"]["mean"].as_f64().expect("kid");
        let kid_ref = theirs["kid_mean"].as_f64().expect("golden");
        // torch-fidelity sums float32 kernels: allow its rounding on top of 1 %.
        assert!((kid - kid_ref).abs() <= 0.01 * kid_ref.abs() + 2e-6, "{set} KID: Easel {kid} vs {kid_ref}");
    }
}

#[test]
fn kid_and_is_maths_match_torch_fidelity() {
    let g = golden();
    let m = &g["math"];
    let rows = |v: &Value| -> Vec<Vec<f32>> {
        v.as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("number") as f32).collect())
            .collect()
    };
    let is = easel::metrics::inception_score::inception_score(&rows(&m["logits"]), 10, 2020).expect("is");
    close(is.mean, m["is_mean"].as_f64().expect("golden"), 1e-9, "IS mean");
    close(is.std, m["is_std"].as_f64().expect("golden"), 1e-7, "IS std");
    let kid =
        easel::metrics::kid::kernel_inception_distance(&rows(&m["kid_a"]), &rows(&m["kid_b"]), 50, 20, 2020)
            .expect("kid");
    close(kid.mean, m["kid_mean"].as_f64().expect("golden"), 1e-4, "KID mean");
    close(kid.std, m["kid_std"].as_f64().expect("golden"), 1e-3, "KID std");
}

#[test]
fn pytorch_fid_statistics_files_are_read() {
    let stats =
        easel::metrics::fid::Statistics::load_npz(&metrics_dir().join("small_stats.npz")).expect("reads");
    assert_eq!(stats.mu, vec![1.0, -2.0, 0.5]);
    assert_eq!(stats.sigma[(1, 2)], 0.2);
}

#[test]
fn saved_reference_statistics_give_the_same_fid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("ref.npz");
    let first = eval(&["--save-reference-stats", stats.to_str().expect("utf-8")]);
    let m = metrics_dir();
    let device = test_device();
    let out = dir.path().join("again.json");
    let res = easel(&[
        "eval",
        "--reference-stats",
        stats.to_str().expect("utf-8"),
        "--generated",
        m.join("generated_a").to_str().expect("utf-8"),
        "--inception",
        formula_weights().to_str().expect("utf-8"),
        "--device",
        &device,
        "--no-cache",
        "--json",
        out.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    let again: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("json")).expect("json");
    close(
        again["sets"][0]["fid"].as_f64().expect("fid"),
        first["sets"][0]["fid"].as_f64().expect("fid"),
        1e-9,
        "FID from saved statistics",
    );
    assert!(again["sets"][0]["kid"].is_null(), "KID needs reference pictures, not statistics");
}

#[test]
fn missing_inception_weights_say_where_to_put_them() {
    let m = metrics_dir();
    let res = easel(&[
        "eval",
        "--reference",
        m.join("reference").to_str().expect("utf-8"),
        "--generated",
        m.join("generated_b").to_str().expect("utf-8"),
        "--inception",
        "/nowhere/pt_inception.pth",
    ]);
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(
        err.contains("Inception weights are missing") && err.contains("pt_inception-2015-12-05"),
        "{err}"
    );
}

#[test]
fn kid_with_a_subset_smaller_than_the_sets_follows_torch_fidelity_order() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(metrics_dir().join("kid_order.json")).expect("fixture"),
    )
    .expect("json");
    let size = golden["kid_subset_size"].to_string();
    let subsets = golden["kid_subsets"].to_string();
    let report = eval(&["--resize", "tf1", "--kid-subset-size", &size, "--kid-subsets", &subsets]);
    for (i, set) in ["generated_a", "generated_b"].iter().enumerate() {
        let g = &golden[set];
        assert!(g["references"].as_u64() > golden["kid_subset_size"].as_u64(), "the subset is smaller");
        let kid = report["sets"][i]["kid"]["mean"].as_f64().expect("kid");
        let (theirs, swapped) =
            (g["kid_mean"].as_f64().expect("golden"), g["kid_mean_sets_swapped"].as_f64().expect("golden"));
        // torch-fidelity sums float32 kernels: allow its rounding on top of 1 %.
        assert!((kid - theirs).abs() <= 0.01 * theirs.abs() + 2e-6, "{set} KID: Easel {kid} vs {theirs}");
        assert!(
            (kid - theirs).abs() < (kid - swapped).abs(),
            "{set}: {kid} is nearer the swapped order's {swapped}"
        );
        let std = report["sets"][i]["kid"]["std"].as_f64().expect("std");
        let theirs_std = g["kid_std"].as_f64().expect("golden");
        assert!((std - theirs_std).abs() <= 0.02 * theirs_std + 2e-6, "{set} KID std: {std} vs {theirs_std}");
    }
}
