//! Control-map preprocessors on real inputs: Canny against OpenCV's own `cv2.Canny` maps
//! (photographs, a grey picture, synthetic shapes and noise; six threshold pairs and L2; made by
//! tests/fixtures/make_canny_fixtures.py), Pillow's Lanczos resize (how diffusers fits a control
//! picture; make_resize_fixtures.py), and the CLI's `save=` writing the map a unit uses.

mod common;

use common::*;
use easel::engine::preprocess::canny::{canny, Norm};
use serde_json::Value;

#[test]
fn canny_equals_opencv_pixel_for_pixel() {
    let dir = fixtures().join("controlnet/canny");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases")).expect("JSON");
    let cases = cases["cases"].as_array().expect("a list");
    assert!(cases.len() >= 30);
    for c in cases {
        let input = image::open(dir.join(c["input"].as_str().expect("input"))).expect("input picture");
        let (pixels, channels) = match input {
            image::DynamicImage::ImageLuma8(g) => (g.into_raw(), 1),
            other => (other.to_rgb8().into_raw(), 3),
        };
        let expected = image::open(dir.join(c["map"].as_str().expect("map"))).expect("map").to_luma8();
        let (w, h) = expected.dimensions();
        let norm = if c["l2"] == true { Norm::L2 } else { Norm::L1 };
        let low = c["low"].as_f64().expect("low");
        let high = c["high"].as_f64().expect("high");
        let ours = canny(&pixels, w as usize, h as usize, channels, low, high, norm);
        let differing = ours.pixels().zip(expected.pixels()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{}: {differing} pixels differ from cv2.Canny", c["map"]);
        let edges = ours.pixels().filter(|p| p.0[0] == 255).count() as u64;
        assert_eq!(Some(edges), c["edge_pixels"].as_u64(), "{}", c["map"]);
    }
}

#[test]
fn control_pictures_are_resized_as_pillow_does() {
    use easel::engine::preprocess::{fit, resample::lanczos_resize, ResizeMode};
    let dir = fixtures().join("controlnet/resize");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases")).expect("JSON");
    for c in cases["cases"].as_array().expect("a list") {
        let input = load_rgb(&fixtures().join("controlnet/canny").join(c["input"].as_str().expect("input")));
        let expected = load_rgb(&dir.join(c["output"].as_str().expect("output")));
        let (w, h) = expected.dimensions();
        let ours = lanczos_resize(&input, w, h);
        let differing = ours.as_raw().iter().zip(expected.as_raw()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{}: {differing} values differ from Pillow's", c["output"]);
        // "Just Resize" is that resize; the photo is square, so cropping to a square scales the same way.
        assert_eq!(fit(&input, w, h, ResizeMode::Just), ours);
        if input.width() == input.height() && w == h {
            assert_eq!(fit(&input, w, h, ResizeMode::Crop), ours);
        }
    }
}

#[test]
fn the_cli_saves_the_canny_map_a_unit_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("x.png");
    let map = dir.path().join("map.png");
    let photo = fixtures().join("controlnet/canny/photo.png");
    let control = format!(
        "model={},image={},preprocess=canny,low=100,high=200,resize=just,save={}",
        fixtures().join("controlnet/sd15").display(),
        photo.display(),
        map.display()
    );
    let model = fixtures().join("tiny-sd").display().to_string();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "x",
        "--steps",
        "2",
        "--width",
        "192",
        "--height",
        "192",
        "--control",
        &control,
        "-o",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(out.display().to_string());
    let res = easel_owned(&args);
    assert!(res.status.success(), "{}", stderr(&res));
    // The photo is already 192×192, so the map is cv2's at 100/200.
    let expected = load_rgb(&fixtures().join("controlnet/canny/photo_100_200.png"));
    assert_eq!(load_rgb(&map), expected);
    assert!(out.is_file());
}
