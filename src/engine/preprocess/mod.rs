//! Control maps from pictures: fitting a picture to the generation's size (A1111's three resize
//! modes) and the preprocessors that need no model — Canny edges (OpenCV's, pixel for pixel),
//! scribble from canvas strokes, line art from a clean drawing, tile (a softened copy) and the
//! inpainting map (masked pixels marked −1, as diffusers' and A1111's inpaint ControlNets read).

pub mod canny;
pub mod resample;

use image::imageops::{self, FilterType};
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Setting};

/// How a control picture of another size or shape is fitted to the generation's (A1111's modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Stretch to the size, ignoring the aspect ratio ("Just Resize"; what diffusers does).
    Just,
    /// Scale to cover the size and cut the overflow off the middle ("Crop and Resize", A1111's default).
    #[default]
    Crop,
    /// Scale to fit inside the size and fill the margins ("Resize and Fill").
    Fill,
}

impl ResizeMode {
    /// Every mode, in menu order.
    pub const ALL: [ResizeMode; 3] = [ResizeMode::Just, ResizeMode::Crop, ResizeMode::Fill];

    /// The CLI's spelling.
    pub fn id(self) -> &'static str {
        match self {
            ResizeMode::Just => "just",
            ResizeMode::Crop => "crop",
            ResizeMode::Fill => "fill",
        }
    }

    /// A1111's name.
    pub fn a1111_name(self) -> &'static str {
        match self {
            ResizeMode::Just => "Just Resize",
            ResizeMode::Crop => "Crop and Resize",
            ResizeMode::Fill => "Resize and Fill",
        }
    }

    /// Reads the CLI's or A1111's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| m.id().eq_ignore_ascii_case(s) || m.a1111_name().eq_ignore_ascii_case(s))
    }
}

/// What turns the unit's picture into the control map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Preprocessor {
    /// The picture is the map already.
    #[default]
    None,
    /// Canny edges between two gradient thresholds (A1111's defaults 100 and 200).
    Canny {
        /// Below this, never an edge.
        low: f64,
        /// Above this, always an edge.
        high: f64,
    },
    /// Strokes on a light canvas (any pixel `threshold` or more away from white) become white on
    /// black, as scribble ControlNets were trained.
    Scribble {
        /// Distance from white that counts as a stroke.
        threshold: u8,
    },
    /// A clean drawing's dark lines (luminance inverted, `threshold` or more) become white on black.
    Lineart {
        /// Inverted luminance that counts as a line.
        threshold: u8,
    },
    /// 255 − value on every channel (A1111's "invert (from white bg & black line)").
    Invert,
    /// A copy shrunk `factor` times and scaled back, for tile ControlNets (A1111's tile_resample).
    Tile {
        /// How many times smaller the copy is.
        factor: f64,
    },
    /// The start picture with the mask's pixels marked −1, for inpaint ControlNets.
    Inpaint,
}

impl Preprocessor {
    /// Every kind with its default parameters, in menu order.
    pub const ALL: [Preprocessor; 7] = [
        Preprocessor::None,
        Preprocessor::Canny { low: 100.0, high: 200.0 },
        Preprocessor::Scribble { threshold: 64 },
        Preprocessor::Lineart { threshold: 128 },
        Preprocessor::Invert,
        Preprocessor::Tile { factor: 2.0 },
        Preprocessor::Inpaint,
    ];

    /// The CLI's and A1111's module name.
    pub fn id(&self) -> &'static str {
        match self {
            Preprocessor::None => "none",
            Preprocessor::Canny { .. } => "canny",
            Preprocessor::Scribble { .. } => "scribble",
            Preprocessor::Lineart { .. } => "lineart",
            Preprocessor::Invert => "invert",
            Preprocessor::Tile { .. } => "tile",
            Preprocessor::Inpaint => "inpaint",
        }
    }

    /// The module name A1111's ControlNet extension writes for it.
    pub fn a1111_name(&self) -> &'static str {
        match self {
            Preprocessor::None => "none",
            Preprocessor::Canny { .. } => "canny",
            // A1111 has no thresholded scribble or line art of a drawing; its "invert" makes the
            // same map from a clean drawing, and A1111 can read it.
            Preprocessor::Scribble { .. } | Preprocessor::Lineart { .. } => {
                "invert (from white bg & black line)"
            }
            Preprocessor::Invert => "invert (from white bg & black line)",
            Preprocessor::Tile { .. } => "tile_resample",
            Preprocessor::Inpaint => "inpaint_only",
        }
    }

    /// The kind named `id` (Easel's or A1111's module name) with its default parameters.
    pub fn named(id: &str) -> Option<Self> {
        let id = id.trim().to_ascii_lowercase();
        let id = match id.as_str() {
            "invert" | "invert (from white bg & black line)" => "invert",
            "tile_resample" => "tile",
            "inpaint_only" | "inpaint_global_harmonious" => "inpaint",
            "lineart_standard" | "lineart_standard (from white bg & black line)" => "lineart",
            other => other,
        };
        Self::ALL.into_iter().find(|p| p.id() == id)
    }

    /// Its two numeric parameters (A1111's "Threshold A/B"), where it has them.
    pub fn params(&self) -> (Option<f64>, Option<f64>) {
        match *self {
            Preprocessor::Canny { low, high } => (Some(low), Some(high)),
            Preprocessor::Scribble { threshold } | Preprocessor::Lineart { threshold } => {
                (Some(f64::from(threshold)), None)
            }
            Preprocessor::Tile { factor } => (Some(factor), None),
            _ => (None, None),
        }
    }

    /// The same kind with parameter A and/or B replaced.
    pub fn with_params(self, a: Option<f64>, b: Option<f64>) -> Self {
        let byte = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        match self {
            Preprocessor::Canny { low, high } => {
                Preprocessor::Canny { low: a.unwrap_or(low), high: b.unwrap_or(high) }
            }
            Preprocessor::Scribble { threshold } => {
                Preprocessor::Scribble { threshold: a.map_or(threshold, byte) }
            }
            Preprocessor::Lineart { threshold } => {
                Preprocessor::Lineart { threshold: a.map_or(threshold, byte) }
            }
            Preprocessor::Tile { factor } => Preprocessor::Tile { factor: a.unwrap_or(factor) },
            other => other,
        }
    }

    /// Refuses parameters that make no map, in one sentence.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::setting(Setting::Control, m));
        match *self {
            Preprocessor::Canny { low, high }
                if !(low.is_finite() && high.is_finite() && low >= 0.0 && high >= 0.0) =>
            {
                bad(format!("canny thresholds must be 0 or more (got {low} and {high})"))
            }
            Preprocessor::Tile { factor } if !(factor.is_finite() && (1.0..=64.0).contains(&factor)) => {
                bad(format!("the tile factor must be between 1 and 64 (got {factor})"))
            }
            _ => Ok(()),
        }
    }
}

/// A control map at the generation's size: RGB in [0, 255], and for inpaint maps the pixels that
/// read −1 instead.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlMap {
    /// The map.
    pub image: RgbImage,
    /// White where the map is −1 (the inpaint preprocessor's masked pixels).
    pub masked: Option<GrayImage>,
}

/// Fits `picture` to `width`×`height` with `mode`, resampling with Pillow's Lanczos to the bit (what
/// diffusers does to a control picture, so "Just Resize", and the other modes for a picture of the
/// generation's shape, give diffusers' maps); margins of "Resize and Fill" take the median colour of
/// the picture's edge, as A1111's ControlNet extension fills them.
pub fn fit(picture: &RgbImage, width: u32, height: u32, mode: ResizeMode) -> RgbImage {
    let (w, h) = picture.dimensions();
    if (w, h) == (width, height) {
        return picture.clone();
    }
    let scale =
        |k: f64| ((f64::from(w) * k).round().max(1.0) as u32, (f64::from(h) * k).round().max(1.0) as u32);
    let (kx, ky) = (f64::from(width) / f64::from(w), f64::from(height) / f64::from(h));
    match mode {
        ResizeMode::Just => resample::lanczos_resize(picture, width, height),
        ResizeMode::Crop => {
            let (sw, sh) = scale(kx.max(ky));
            let scaled = resample::lanczos_resize(picture, sw.max(width), sh.max(height));
            let (x, y) = ((scaled.width() - width) / 2, (scaled.height() - height) / 2);
            imageops::crop_imm(&scaled, x, y, width, height).to_image()
        }
        ResizeMode::Fill => {
            let (sw, sh) = scale(kx.min(ky));
            let scaled = resample::lanczos_resize(picture, sw.min(width), sh.min(height));
            let mut out = RgbImage::from_pixel(width, height, edge_median(picture));
            let (x, y) = ((width - scaled.width()) / 2, (height - scaled.height()) / 2);
            imageops::replace(&mut out, &scaled, i64::from(x), i64::from(y));
            out
        }
    }
}

/// The per-channel median of the picture's outermost pixels.
fn edge_median(picture: &RgbImage) -> image::Rgb<u8> {
    let (w, h) = picture.dimensions();
    let mut edge: Vec<[u8; 3]> = Vec::new();
    for x in 0..w {
        edge.push(picture.get_pixel(x, 0).0);
        edge.push(picture.get_pixel(x, h - 1).0);
    }
    for y in 0..h {
        edge.push(picture.get_pixel(0, y).0);
        edge.push(picture.get_pixel(w - 1, y).0);
    }
    let mut out = [0u8; 3];
    for (c, slot) in out.iter_mut().enumerate() {
        let mut v: Vec<u8> = edge.iter().map(|p| p[c]).collect();
        v.sort_unstable();
        *slot = v[v.len() / 2];
    }
    image::Rgb(out)
}

/// Runs `preprocessor` on `picture` (already at the generation's size); `mask` (white = repaint)
/// is what the inpaint preprocessor marks.
pub fn apply(
    preprocessor: &Preprocessor,
    picture: &RgbImage,
    mask: Option<&GrayImage>,
) -> Result<ControlMap> {
    preprocessor.check()?;
    let (w, h) = picture.dimensions();
    let grey_to_rgb = |g: &GrayImage| RgbImage::from_fn(w, h, |x, y| image::Rgb([g.get_pixel(x, y).0[0]; 3]));
    let image = match *preprocessor {
        Preprocessor::None => picture.clone(),
        Preprocessor::Canny { low, high } => {
            let edges = canny::canny(picture.as_raw(), w as usize, h as usize, 3, low, high, canny::Norm::L1);
            grey_to_rgb(&edges)
        }
        Preprocessor::Scribble { threshold } => {
            binary(picture, |p| p.iter().map(|&v| 255 - v).max().unwrap_or(0) >= threshold.max(1))
        }
        Preprocessor::Lineart { threshold } => binary(picture, |p| 255 - luma(p) >= threshold.max(1)),
        Preprocessor::Invert => RgbImage::from_fn(w, h, |x, y| {
            let p = picture.get_pixel(x, y).0;
            image::Rgb([255 - p[0], 255 - p[1], 255 - p[2]])
        }),
        Preprocessor::Tile { factor } => {
            let sw = ((f64::from(w) / factor).round() as u32).max(1);
            let sh = ((f64::from(h) / factor).round() as u32).max(1);
            let small = imageops::resize(picture, sw, sh, FilterType::Triangle);
            imageops::resize(&small, w, h, FilterType::CatmullRom)
        }
        Preprocessor::Inpaint => {
            let Some(mask) = mask else {
                return Err(Error::setting(
                    Setting::Control,
                    "the inpaint preprocessor needs a mask: paint one on the canvas and start from it for inpainting (on the command line, give --mask)",
                ));
            };
            let masked = GrayImage::from_fn(w, h, |x, y| {
                let v = mask.get_pixel(x.min(mask.width() - 1), y.min(mask.height() - 1)).0[0];
                image::Luma([if v >= 128 { 255 } else { 0 }])
            });
            return Ok(ControlMap { image: picture.clone(), masked: Some(masked) });
        }
    };
    Ok(ControlMap { image, masked: None })
}

/// ITU-R 601 luma, as PIL's convert("L").
fn luma(p: &[u8; 3]) -> u8 {
    ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500) / 1000) as u8
}

fn binary(picture: &RgbImage, on: impl Fn(&[u8; 3]) -> bool) -> RgbImage {
    let (w, h) = picture.dimensions();
    RgbImage::from_fn(w, h, |x, y| image::Rgb([if on(&picture.get_pixel(x, y).0) { 255 } else { 0 }; 3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A white canvas with a dark stroke, a red stroke and a faint smudge.
    fn sketch() -> RgbImage {
        let mut c = RgbImage::from_pixel(32, 16, image::Rgb([255, 255, 255]));
        for x in 2..30 {
            c.put_pixel(x, 4, image::Rgb([20, 20, 20]));
            c.put_pixel(x, 10, image::Rgb([220, 30, 30]));
            c.put_pixel(x, 14, image::Rgb([245, 245, 245]));
        }
        c
    }

    fn white_rows(map: &RgbImage) -> Vec<u32> {
        (0..map.height()).filter(|&y| (0..map.width()).any(|x| map.get_pixel(x, y).0 == [255; 3])).collect()
    }

    #[test]
    fn scribble_keeps_every_stroke_colour_and_drops_the_smudge() -> Result<()> {
        let map = apply(&Preprocessor::Scribble { threshold: 64 }, &sketch(), None)?;
        assert_eq!(white_rows(&map.image), vec![4, 10]);
        assert_eq!(map.image.get_pixel(0, 0).0, [0; 3], "the paper becomes black");
        Ok(())
    }

    #[test]
    fn lineart_keeps_the_dark_lines_only() -> Result<()> {
        let map = apply(&Preprocessor::Lineart { threshold: 128 }, &sketch(), None)?;
        // The red stroke's luma is 90: inverted 165, above the threshold; the smudge is not.
        assert_eq!(white_rows(&map.image), vec![4, 10]);
        let strict = apply(&Preprocessor::Lineart { threshold: 200 }, &sketch(), None)?;
        assert_eq!(white_rows(&strict.image), vec![4]);
        Ok(())
    }

    #[test]
    fn inpaint_marks_the_mask_and_needs_one() -> Result<()> {
        let mut mask = GrayImage::new(32, 16);
        mask.put_pixel(3, 3, image::Luma([255]));
        let map = apply(&Preprocessor::Inpaint, &sketch(), Some(&mask))?;
        let masked = map.masked.expect("a masked layer");
        assert_eq!(masked.pixels().filter(|p| p.0[0] == 255).count(), 1);
        assert!(apply(&Preprocessor::Inpaint, &sketch(), None).is_err());
        Ok(())
    }

    #[test]
    fn resize_modes_keep_or_stretch_the_shape() {
        // A 40×20 picture, left half black, right half white, into 20×20.
        let pic = RgbImage::from_fn(40, 20, |x, _| image::Rgb([if x < 20 { 0 } else { 255 }; 3]));
        let crop = fit(&pic, 20, 20, ResizeMode::Crop);
        assert_eq!(crop.dimensions(), (20, 20));
        assert!(crop.get_pixel(0, 10).0[0] < 10 && crop.get_pixel(19, 10).0[0] > 245, "the middle is kept");
        let fill = fit(&pic, 20, 20, ResizeMode::Fill);
        assert_eq!(fill.dimensions(), (20, 20));
        // The picture becomes 20×10 in the middle; the margins take the edge's median.
        assert_eq!(fill.get_pixel(10, 0).0, edge_median(&pic).0);
        let just = fit(&pic, 20, 20, ResizeMode::Just);
        assert!(just.get_pixel(2, 10).0[0] < 10 && just.get_pixel(17, 10).0[0] > 245);
        for m in ResizeMode::ALL {
            assert_eq!(ResizeMode::parse(m.a1111_name()), Some(m));
            assert_eq!(ResizeMode::parse(m.id()), Some(m));
        }
    }

    #[test]
    fn names_round_trip_and_bad_parameters_are_refused() {
        for p in Preprocessor::ALL {
            assert_eq!(Preprocessor::named(p.id()), Some(p));
            let back = Preprocessor::named(p.a1111_name()).expect("A1111's name is read");
            // Scribble and line art are written as A1111's invert, which makes their map.
            let expected = if matches!(p, Preprocessor::Scribble { .. } | Preprocessor::Lineart { .. }) {
                Preprocessor::Invert
            } else {
                p
            };
            assert_eq!(back, expected);
        }
        assert!(Preprocessor::Tile { factor: 0.5 }.check().is_err());
        assert!(Preprocessor::Canny { low: -1.0, high: 3.0 }.check().is_err());
    }
}
