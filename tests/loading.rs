//! The less common files users have: PyTorch `.ckpt` archives (read without running pickle code)
//! and 9-channel inpainting models, against fixtures made by tests/fixtures/make_fixtures.py.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use easel::engine::weights::read_pickle_checkpoint;

#[test]
fn ckpt_tensors_are_read_under_state_dict() {
    let tensors = read_pickle_checkpoint(&fixtures().join("small.ckpt")).expect("readable");
    let text = std::fs::read_to_string(fixtures().join("small_ckpt_values.json")).expect("fixture");
    let expected: HashMap<String, Vec<f32>> = serde_json::from_str(&text).expect("json");
    assert_eq!(tensors.len(), expected.len());
    for (name, values) in expected {
        let t = tensors[&name].to_dtype(candle_core::DType::F32).expect("f32");
        assert_eq!(t.flatten_all().expect("flat").to_vec1::<f32>().expect("values"), values, "{name}");
    }
}

#[test]
fn a_malicious_ckpt_is_never_executed() {
    let marker = Path::new("/tmp/easel-pickle-was-executed");
    let _ = std::fs::remove_file(marker);
    let result = read_pickle_checkpoint(&fixtures().join("evil.ckpt"));
    assert!(!marker.exists(), "reading a checkpoint ran its pickle code");
    // Either the tensors come out and the payload is ignored, or the file is refused by name.
    match result {
        Ok(tensors) => assert!(tensors.contains_key("model.diffusion_model.a")),
        Err(e) => assert!(e.to_string().contains("never runs pickle code"), "{e}"),
    }
}

/// tiny-sd with its UNet replaced by the 9-channel inpainting UNet.
fn inpainting_model(dir: &Path) -> std::path::PathBuf {
    let dst = dir.join("inpaint-model");
    copy_tree(&fixtures().join("tiny-sd"), &dst);
    std::fs::remove_dir_all(dst.join("unet")).expect("remove");
    copy_tree(&fixtures().join("tiny-inpaint-unet"), &dst.join("unet"));
    dst
}

#[test]
fn nine_channel_inpainting_matches_diffusers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = inpainting_model(dir.path());
    let out = dir.path().join("inpaint9.png");
    let init = fixtures().join("golden/ddim.png");
    let mask = fixtures().join("mask.png");
    let res = easel(&[
        "generate",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt",
        "a red boat",
        "--sampler",
        "ddim",
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
        "3",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/inpaint9_ddim.png"));

    let res = easel(&["inspect", "--json", model.to_str().expect("utf-8")]);
    let json: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    assert_eq!(json["inpainting"], true);
}

#[test]
fn inpainting_model_without_a_mask_says_what_it_needs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = inpainting_model(dir.path());
    let out = dir.path().join("x.png");
    let res = easel(&[
        "generate",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt",
        "a red boat",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!res.status.success());
    assert!(stderr(&res).contains("inpainting model") && stderr(&res).contains("--mask"), "{}", stderr(&res));
    assert!(!out.exists());
}

#[test]
fn keep_unmasked_puts_the_start_pixels_back_outside_the_mask() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = inpainting_model(dir.path());
    let init = fixtures().join("golden/ddim.png");
    let mask = fixtures().join("mask.png");
    let run = |name: &str, keep: bool| {
        let out = dir.path().join(name);
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().expect("utf-8"),
            "--prompt",
            "a red boat",
            "--steps",
            "3",
            "--init-image",
            init.to_str().expect("utf-8"),
            "--mask",
            mask.to_str().expect("utf-8"),
            "--seed",
            "3",
            "-o",
            out.to_str().expect("utf-8"),
        ];
        if keep {
            args.push("--keep-unmasked");
        }
        let res = easel(&args);
        assert!(res.status.success(), "{}", stderr(&res));
        image::open(&out).expect("written").to_rgb8()
    };
    let (plain, kept) = (run("plain.png", false), run("kept.png", true));
    let start = image::open(&init).expect("init").to_rgb8();
    let mask = image::open(&mask).expect("mask").to_luma8();
    let (mut outside, mut changed_outside) = (0, 0);
    for ((m, k), (s, p)) in mask.pixels().zip(kept.pixels()).zip(start.pixels().zip(plain.pixels())) {
        match m.0[0] {
            0 => {
                outside += 1;
                assert_eq!(k, s, "outside the mask the start picture is kept exactly");
                changed_outside += usize::from(p != s);
            }
            255 => assert_eq!(k, p, "inside the mask the generated picture is kept"),
            _ => {}
        }
    }
    assert!(outside > 0 && changed_outside > 0, "without the option the VAE changes kept pixels too");
}
