//! Same weights and same starting noise give diffusers' picture: goldens made by
//! tests/fixtures/make_fixtures.py (diffusers 0.42) from a tiny SD 1.5-topology model, compared
//! with what the real binary draws from the diffusers folder and from the single-file checkpoint.

mod common;

use common::*;

fn check(model: &str, sampler: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join(format!("{sampler}.png"));
    generate_golden_settings(&fixtures().join(model), sampler, &out);
    assert_matches_golden(&out, &fixtures().join("golden").join(format!("{sampler}.png")));
}

#[test]
fn folder_ddim_matches_diffusers() {
    check("tiny-sd", "ddim");
}

#[test]
fn folder_euler_matches_diffusers() {
    check("tiny-sd", "euler");
}

#[test]
fn folder_dpmpp_2m_matches_diffusers() {
    check("tiny-sd", "dpmpp_2m");
}

#[test]
fn folder_dpmpp_2m_karras_matches_diffusers() {
    check("tiny-sd", "dpmpp_2m_karras");
}

#[test]
fn single_file_ddim_matches_diffusers() {
    check("tiny-sd.safetensors", "ddim");
}

#[test]
fn single_file_euler_matches_diffusers() {
    check("tiny-sd.safetensors", "euler");
}

#[test]
fn single_file_dpmpp_2m_karras_matches_diffusers() {
    check("tiny-sd.safetensors", "dpmpp_2m_karras");
}

#[test]
fn half_precision_stays_within_the_bar() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("f16.png");
    generate_golden_settings_in(&fixtures().join("tiny-sd"), "dpmpp_2m_karras", "f16", &out);
    assert_matches_golden(&out, &fixtures().join("golden/dpmpp_2m_karras.png"));
}

#[test]
fn bf16_stays_within_bf16s_own_distance_from_the_golden() {
    // bf16 keeps 8 bits of mantissa, so it cannot meet the f32 bar. diffusers itself, run in
    // bf16 on this case (torch 2.15, CPU), lands 48.4 dB and at most 5/255 from its f32 golden;
    // Easel's bf16 (pair kernels where the CPU has AVX-512 BF16) must land as close.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bf16.png");
    generate_golden_settings_in(&fixtures().join("tiny-sd"), "dpmpp_2m_karras", "bf16", &out);
    let within = |golden: &str| {
        let (psnr, max) = compare(&load_rgb(&out), &load_rgb(&fixtures().join("golden").join(golden)));
        (max <= 6 && psnr >= 46.0, format!("{psnr:.1} dB, up to {max}/255"))
    };
    let (ok, distance) = within("dpmpp_2m_karras.png");
    assert!(ok, "bf16 is {distance} from the golden");
    // The bar still tells pictures apart: the nearest other golden (dpmpp_2m without Karras
    // sigmas, 45.5 dB and 9/255 away) is outside it.
    let (ok, distance) = within("dpmpp_2m.png");
    assert!(!ok, "dpmpp_2m's golden passes the bf16 bar ({distance})");
}

#[test]
fn goldens_tell_samplers_apart() {
    // The bar must be able to fail: different samplers' goldens do not pass it against each other.
    let golden = |s: &str| load_rgb(&fixtures().join("golden").join(format!("{s}.png")));
    for (a, b) in [("euler", "dpmpp_2m_karras"), ("dpmpp_2m", "dpmpp_2m_karras"), ("ddim", "euler")] {
        let (psnr, max) = compare(&golden(a), &golden(b));
        assert!(max > 3, "{a} vs {b}: max difference {max} would pass the parity bar");
        assert!(psnr < 60.0, "{a} vs {b}: PSNR {psnr}");
    }
}

#[test]
fn seeded_img2img_matches_diffusers() {
    // diffusers ran with torch.Generator().manual_seed(7): Easel's generator reproduces it.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("img2img.png");
    let init = fixtures().join("golden/ddim.png");
    let res = easel(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().expect("utf-8"),
        "--prompt",
        "an oil painting of a lighthouse",
        "--sampler",
        "ddim",
        "--steps",
        "12",
        "--cfg",
        "7.5",
        "--init-image",
        init.to_str().expect("utf-8"),
        "--strength",
        "0.6",
        "--seed",
        "7",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/img2img_ddim.png"));
}

#[test]
fn seeded_inpainting_matches_diffusers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("inpaint.png");
    let init = fixtures().join("golden/ddim.png");
    let mask = fixtures().join("mask.png");
    let res = easel(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().expect("utf-8"),
        "--prompt",
        "a red boat",
        "--sampler",
        "euler",
        "--steps",
        "12",
        "--cfg",
        "7.5",
        "--init-image",
        init.to_str().expect("utf-8"),
        "--mask",
        mask.to_str().expect("utf-8"),
        "--strength",
        "1",
        "--seed",
        "11",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/inpaint_euler.png"));
}

#[test]
fn sd2_single_file_matches_diffusers() {
    // OpenCLIP text encoder with fused q/k/v and a skipped last layer, linear projections,
    // 64-wide heads, "!" padding and v-prediction (tests/fixtures/make_sd2_fixtures.py).
    for sampler in ["euler", "dpmpp_2m_karras"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("sd2.png");
        generate_golden_settings(&fixtures().join("tiny-sd2.safetensors"), sampler, &out);
        assert_matches_golden(&out, &fixtures().join(format!("golden/sd2_{sampler}.png")));
    }
}

#[test]
fn prediction_type_can_be_overridden() {
    // The tiny model with --prediction v_prediction is the v-prediction variant diffusers drew.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("v.png");
    let mut args = golden_args(&fixtures().join("tiny-sd"), PROMPT, "dpmpp_2m_karras", &out);
    args.extend(["--prediction", "v_prediction"].map(String::from));
    let res = easel_owned(&args);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/dpmpp_2m_karras_vpred.png"));
}
