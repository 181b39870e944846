//! ControlNet: the network alone against diffusers' residuals (from the diffusers folder, the
//! original `.pth` with `control_model.`, and SDXL), pictures from diffusers' ControlNet pipelines
//! drawn again by the real binary (one unit, two units with their own start/end and weights, guess
//! mode, img2img, inpainting, SDXL), the PNG's `ControlNet 0` fields, and refusals in one sentence.
//! Fixtures by tests/fixtures/make_controlnet_fixtures.py (cases in golden/controlnet_cases.json).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use easel::engine::conditioning::Conditioning;
use easel::engine::config::UNetConfig;
use easel::engine::controlnet::{self, ControlMode};
use easel::engine::unet::Residuals;
use serde_json::Value;

fn cn(path: &str) -> PathBuf {
    fixtures().join("controlnet").join(path)
}

fn unet_config(model: &str) -> UNetConfig {
    let text = std::fs::read_to_string(fixtures().join(model).join("unet/config.json")).expect("config");
    serde_json::from_str(&text).expect("a UNet config")
}

/// The largest difference between our residuals (scaled as `mode` does) and diffusers'.
fn worst(
    ours: &Residuals,
    theirs: &HashMap<String, Tensor>,
    prefix: &str,
    scales: &[f64],
) -> candle_core::Result<f32> {
    let n = ours.down.len();
    let mut pairs: Vec<(Tensor, &Tensor)> = Vec::with_capacity(n + 1);
    for (i, d) in ours.down.iter().enumerate() {
        pairs.push(((d * scales[i])?, &theirs[&format!("{prefix}down.{i}")]));
    }
    pairs.push(((&ours.mid * scales[n])?, &theirs[&format!("{prefix}mid")]));
    let mut worst = 0f32;
    for (a, b) in pairs {
        worst = worst.max((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?);
    }
    Ok(worst)
}

fn residuals_match(model: &str, file: &str, fixture: &str) {
    let base = unet_config(model);
    let net = controlnet::load(&cn(file), &base, &Device::Cpu, DType::F32).expect("the ControlNet loads");
    let t = candle_core::safetensors::load(cn(fixture), &Device::Cpu).expect("residual fixture");
    let timestep = t["timestep"].to_dtype(DType::F64).and_then(|v| v.to_scalar::<f64>()).expect("a timestep");
    let cond = Conditioning {
        context: t["context"].clone(),
        pooled: t.get("text_embeds").cloned(),
        time_ids: t.get("time_ids").cloned(),
    };
    let ours = net.forward(&t["sample"], timestep, &cond, &t["cond"]).expect("forward");
    assert_eq!(ours.down.len() + 1, net.residual_count());
    let n = ours.down.len() + 1;
    let err = worst(&ours, &t, "", &ControlMode::Balanced.scales(1.0, n)).expect("comparable");
    assert!(err < 2e-4, "{file}: residuals differ from diffusers' by {err}");
    if t.contains_key("guess.mid") {
        let err = worst(&ours, &t, "guess.", &ControlMode::Guess.scales(0.5, n)).expect("comparable");
        assert!(err < 2e-4, "{file}: guess-mode residuals differ by {err}");
    }
}

#[test]
fn the_network_gives_diffusers_residuals_from_the_folder() {
    residuals_match("tiny-sd", "sd15", "residuals_sd15.safetensors");
}

#[test]
fn the_original_pth_with_its_prefix_gives_the_same_residuals() {
    residuals_match("tiny-sd", "control_tiny_sd15.pth", "residuals_sd15.safetensors");
}

#[test]
fn an_sdxl_controlnet_gives_diffusers_residuals() {
    residuals_match("tiny-sdxl", "sdxl", "residuals_sdxl.safetensors");
}

#[test]
fn a_bare_sdxl_file_with_diffusers_names_gives_the_same_residuals() {
    residuals_match("tiny-sdxl", "xl_tiny_diffusers_names.safetensors", "residuals_sdxl.safetensors");
}

#[test]
fn a_controlnet_for_another_family_is_refused_in_one_sentence() {
    let err = controlnet::load(&cn("sdxl"), &unet_config("tiny-sd"), &Device::Cpu, DType::F32)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("made for SDXL") && err.contains("SD 1"), "{err}");
    let err = controlnet::load(
        &fixtures().join("tiny-sd.safetensors"),
        &unet_config("tiny-sd"),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("not a ControlNet"), "{err}");
}

/// The case of golden `file` (e.g. `cn_one.png`), from controlnet_cases.json.
fn case(file: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden/controlnet_cases.json")).expect("cases");
    let cases: Vec<Value> = serde_json::from_str(&text).expect("valid JSON");
    cases
        .into_iter()
        .find(|c| c["file"] == format!("golden/{file}"))
        .unwrap_or_else(|| panic!("no case {file}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `easel generate` arguments for a case into `out`; `single_file` takes each unit's model from
/// the original-layout copy of the same weights where there is one.
fn case_args(c: &Value, out: &Path, single_file: bool) -> Vec<String> {
    let mut args: Vec<String> =
        vec!["generate".into(), "--model".into(), fixtures().join(text(&c["model"])).display().to_string()];
    for (flag, key) in [
        ("--prompt", "prompt"),
        ("--steps", "steps"),
        ("--cfg", "cfg"),
        ("--width", "width"),
        ("--height", "height"),
    ] {
        args.extend([flag.into(), text(&c[key])]);
    }
    args.extend(["--sampler".into(), text(&c["sampler"]["name"]), "--device".into(), test_device()]);
    args.extend(["-o".into(), out.display().to_string()]);
    if let Value::String(negative) = &c["negative"] {
        args.extend(["--negative".into(), negative.clone()]);
    }
    for (flag, key) in [("--noise", "noise"), ("--init-image", "init_image"), ("--mask", "mask")] {
        if let Value::String(file) = &c[key] {
            args.extend([flag.into(), fixtures().join(file).display().to_string()]);
        }
    }
    for (flag, key) in [("--seed", "seed"), ("--strength", "strength")] {
        if !c[key].is_null() {
            args.extend([flag.into(), text(&c[key])]);
        }
    }
    for unit in c["units"].as_array().expect("units") {
        let model = match (single_file, unit["same_weights"].as_array().and_then(|a| a.first())) {
            (true, Some(file)) => text(file),
            _ => text(&unit["model"]),
        };
        let mut flag = format!(
            "model={},image={},weight={},start={},end={}",
            fixtures().join(model).display(),
            fixtures().join(text(&unit["image"])).display(),
            unit["scale"],
            unit["start"],
            unit["end"]
        );
        if c["guess_mode"] == true {
            flag.push_str(",mode=guess");
        }
        args.extend(["--control".into(), flag]);
    }
    args
}

/// Draws the case with the real binary and holds it to the parity bar.
fn check(file: &str, single_file: bool) -> PathBuf {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let out = dir.join(file);
    let res = easel_owned(&case_args(&case(file), &out, single_file));
    assert!(res.status.success(), "generate failed: {}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden").join(file));
    out
}

#[test]
fn one_unit_matches_diffusers_from_the_folder_and_the_pth() {
    check("cn_one.png", false);
    check("cn_one.png", true);
}

#[test]
fn one_unit_in_half_precision_matches_diffusers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("cn_one_f16.png");
    let mut args = case_args(&case("cn_one.png"), &out, true);
    args.extend(["--dtype".into(), "f16".into()]);
    let res = easel_owned(&args);
    assert!(res.status.success(), "generate failed: {}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/cn_one.png"));
}

#[test]
fn two_units_with_their_own_weights_and_step_ranges_match_diffusers() {
    // Without the second unit the picture lands 10/255 away: the bar of 3 tells them apart.
    check("cn_two.png", false);
}

#[test]
fn guess_mode_matches_diffusers() {
    check("cn_guess.png", true);
}

#[test]
fn img2img_with_a_unit_matches_diffusers() {
    check("cn_img2img.png", false);
}

#[test]
fn inpainting_with_a_unit_matches_diffusers() {
    check("cn_inpaint.png", true);
}

#[test]
fn a_unit_ending_half_way_under_dpmpp_matches_diffusers() {
    check("cn_dpmpp.png", false);
}

#[test]
fn a_grey_control_picture_of_another_size_is_fitted_as_diffusers_fits_it() {
    // cv2.Canny's 192² grey map, shrunk to 128² with Pillow's Lanczos by the pipeline.
    check("cn_resized.png", true);
}

#[test]
fn a_globally_pooled_model_matches_diffusers() {
    // The folder's weights with global_pool_conditions set, as shuffle ControlNets publish it.
    let dir = tempfile::tempdir().expect("temp dir");
    let pooled = dir.path().join("controlnet/sd15");
    copy_tree(&cn("sd15"), &pooled);
    let config = pooled.join("config.json");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace("\"global_pool_conditions\": false", "\"global_pool_conditions\": true");
    assert!(text.contains("\"global_pool_conditions\": true"));
    std::fs::write(&config, text).expect("write");
    let out = dir.path().join("cn_pooled.png");
    let mut args = case_args(&case("cn_pooled.png"), &out, false);
    for a in &mut args {
        *a = a.replace(&cn("sd15").display().to_string(), &pooled.display().to_string());
    }
    assert!(args.iter().any(|a| a.contains(&pooled.display().to_string())), "the unit reads the pooled copy");
    let res = easel_owned(&args);
    assert!(res.status.success(), "generate failed: {}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/cn_pooled.png"));
}

#[test]
fn sdxl_with_a_unit_matches_diffusers_from_the_folder_and_a_bare_file() {
    check("cn_sdxl_one.png", false);
    check("cn_sdxl_one.png", true);
}

/// The unit is written into the PNG as A1111's extension writes it, and read back by import.
#[test]
fn the_png_records_the_unit_and_import_reads_it_back() {
    let out = check("cn_one.png", true);
    let texts = easel::export::png::read_png_text(&out).expect("text chunks");
    let params = &texts["parameters"];
    let line = params.lines().last().expect("a fields line");
    assert!(
        line.contains("ControlNet 0: \"Module: none, Model: control_tiny_sd15 [")
            && line.contains("Weight: 0.8, Resize Mode: Crop and Resize, Processor Res: 128")
            && line.contains(
                "Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True, Control Mode: Balanced\""
            ),
        "{line}"
    );
    let imported = easel::export::import::import_png(&out).expect("import");
    let unit = &imported.request.controls[0];
    assert_eq!(unit.model, PathBuf::from("control_tiny_sd15.pth"), "a name, never where it lay");
    assert_eq!((unit.weight, unit.image.as_ref()), (0.8, None));
    let a1111 = easel::export::parameters::parse_a1111(params).to_request().expect("A1111 text");
    assert_eq!(a1111.controls[0].model.to_string_lossy().split(" [").next(), Some("control_tiny_sd15"));
}

#[test]
fn bad_units_are_refused_in_one_sentence_naming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("x.png");
    let model = fixtures().join("tiny-sd").display().to_string();
    let scribble = fixtures().join("controlnet/scribble.png").display().to_string();
    let sd15 = fixtures().join("controlnet/sd15").display().to_string();
    let run = |control: String| {
        let args = [
            "generate", "--model", &model, "--prompt", "x", "--steps", "1", "--width", "64", "--height",
            "64", "-o",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend([out.display().to_string(), "--control".into(), control]);
        let res = easel_owned(&args);
        assert!(!res.status.success(), "should fail");
        stderr(&res)
    };
    let e = run(format!("image={scribble}"));
    assert!(e.contains("unit 0: has no ControlNet model"), "{e}");
    let e = run(format!("model={sd15},image={scribble},weight=5"));
    assert!(e.contains("weight 5 is out of range"), "{e}");
    let e = run(format!("model={sd15},image={}", fixtures().join("golden/controlnet_cases.json").display()));
    assert!(e.contains("cannot read unit 0's control picture") && e.contains("controlnet_cases.json"), "{e}");
    let e = run(format!("model={},image={scribble}", fixtures().join("controlnet/sdxl").display()));
    assert!(e.contains("made for SDXL"), "{e}");
    let e = run(format!("model={sd15},image={scribble},start=0.8,end=0.2"));
    assert!(e.contains("end must be after start"), "{e}");
    assert!(!out.exists(), "nothing is written");
}

/// Every sampler of both implementations, a LoRA stack and an inpaint-map unit run with
/// ControlNet, and the unit changes what each draws.
#[test]
fn units_run_with_every_sampler_a_lora_and_an_inpaint_map() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = fixtures().join("tiny-sd").display().to_string();
    let unit = format!(
        "model={},image={},weight=1.5",
        fixtures().join("controlnet/control_tiny_sd15.pth").display(),
        fixtures().join("controlnet/scribble.png").display()
    );
    let run = |name: &str, extra: &[String]| -> PathBuf {
        let out = dir.path().join(format!("{name}.png"));
        let mut args: Vec<String> =
            ["generate", "--model", &model, "--prompt", "a boat", "--steps", "3", "--seed", "5"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend([
            "--width".into(),
            "64".into(),
            "--height".into(),
            "64".into(),
            "-o".into(),
            out.display().to_string(),
        ]);
        args.extend(extra.iter().cloned());
        let res = easel_owned(&args);
        assert!(res.status.success(), "{name}: {}", stderr(&res));
        out
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let lora = format!("{}:0.8", fixtures().join("lora/inkStyle.safetensors").display());
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("euler_a", s(&["--sampler", "euler_a"])),
        ("dpmpp_2m_karras", s(&["--sampler", "dpmpp_2m_karras"])),
        ("lcm", s(&["--sampler", "lcm", "--cfg", "1"])),
        ("a1111_euler_a", s(&["--sampler", "euler_a", "--sampler-impl", "a1111", "--rng", "gpu"])),
        ("a1111_ddim", s(&["--sampler", "ddim", "--sampler-impl", "a1111"])),
        ("lora", s(&["--sampler", "euler", "--lora", &lora])),
    ];
    for (name, extra) in cases {
        let plain = run(&format!("{name}_plain"), &extra);
        let mut with = extra.clone();
        with.extend(["--control".to_string(), unit.clone()]);
        let steered = run(name, &with);
        let (psnr, _) = compare(&load_rgb(&plain), &load_rgb(&steered));
        assert!(psnr < 45.0, "{name}: the unit changed the picture only {psnr:.1} dB");
    }
    // An inpaint map: the start picture with the mask's pixels at −1.
    let init = fixtures().join("golden/ddim.png").display().to_string();
    let mask = fixtures().join("mask.png").display().to_string();
    let inpaint_unit =
        format!("model={},image={init},preprocess=inpaint", fixtures().join("controlnet/sd15").display());
    run("inpaint", &s(&["--init-image", &init, "--mask", &mask, "--control", &inpaint_unit]));
}

/// A picture made with a unit is made again from its PNG: `--settings-from` brings the unit, its
/// model is found by name in `--controlnet-dir`, and `--control image=` gives the picture back.
#[test]
fn a_picture_with_a_unit_is_made_again_from_its_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("first.png");
    let again = dir.path().join("again.png");
    let model = fixtures().join("tiny-sd").display().to_string();
    let scribble = fixtures().join("controlnet/scribble.png").display().to_string();
    let unit = format!(
        "model={},image={scribble},weight=1.3,end=0.7,mode=control,preprocess=lineart,threshold=100",
        fixtures().join("controlnet/control_tiny_sd15.pth").display()
    );
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "a boat",
        "--steps",
        "4",
        "--seed",
        "9",
        "--width",
        "64",
        "--height",
        "64",
        "--control",
        &unit,
        "-o",
    ];
    let mut first_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    first_args.push(first.display().to_string());
    let res = easel_owned(&first_args);
    assert!(res.status.success(), "{}", stderr(&res));

    let cn_dir = fixtures().join("controlnet").display().to_string();
    let again_args: Vec<String> = [
        "generate",
        "--model",
        &model,
        "--settings-from",
        first.to_str().expect("utf-8"),
        "--controlnet-dir",
        &cn_dir,
        "--control",
        &format!("image={scribble}"),
        "-o",
        again.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let res = easel_owned(&again_args);
    assert!(res.status.success(), "{}", stderr(&res));
    assert_eq!(load_rgb(&first), load_rgb(&again), "the same picture");

    // Without the picture, the unit says what it lacks.
    let res = easel_owned(
        &again_args[..again_args.len() - 4]
            .iter()
            .cloned()
            .chain(["-o".into(), dir.path().join("x.png").display().to_string()])
            .collect::<Vec<_>>(),
    );
    assert!(!res.status.success());
    assert!(stderr(&res).contains("unit 0 has no control picture"), "{}", stderr(&res));
}

#[test]
fn inspect_tells_each_layout_and_family() {
    let cases = [
        ("sd15", "diffusers folder", "SD 1.x", 13),
        ("control_tiny_sd15.pth", "original (lllyasviel), control_model. prefix", "SD 1.x", 13),
        ("control_tiny2_sd15.safetensors", "original (lllyasviel), no prefix", "SD 1.x", 13),
        ("xl_tiny_diffusers_names.safetensors", "diffusers names in one file", "SDXL", 10),
    ];
    for (file, layout, family, residuals) in cases {
        let res = easel(&["inspect", cn(file).to_str().expect("utf-8"), "--json"]);
        assert!(res.status.success(), "{}", stderr(&res));
        let v: Value = serde_json::from_slice(&res.stdout).expect("JSON");
        assert_eq!((v["kind"].as_str(), v["layout"].as_str()), (Some("ControlNet"), Some(layout)), "{file}");
        assert_eq!(
            (v["family"].as_str(), v["residuals"].as_u64()),
            (Some(family), Some(residuals)),
            "{file}"
        );
    }
}
