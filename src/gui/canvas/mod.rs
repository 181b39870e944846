//! The canvas: sketch with a round brush (size, colour, opacity), erase, paint an inpainting mask,
//! undo/redo, clear, or load a picture; then use it as the img2img start or the picture to
//! inpaint. Painting is rasterised by tiny-skia; the window only shows the result.

use std::path::{Path, PathBuf};

use egui::{TextureHandle, TextureOptions};
use image::{GrayImage, RgbImage};
use tiny_skia::{BlendMode, FillRule, LineCap, LineJoin, Paint, Path as SkPath, PathBuilder, Pixmap};
use tiny_skia::{Stroke, Transform};

use crate::error::{Error, Result};

mod stroke;
mod tab;

use stroke::{composite, curve_path, ActiveStroke, Ink, StrokePoint};
pub use tab::canvas_tab_ui;

/// Undo steps kept (each is a copy of both layers).
const UNDO_DEPTH: usize = 30;

/// Input points closer than this (canvas pixels) to the previous one add nothing to a stroke.
const MIN_POINT_GAP: f32 = 0.25;

/// The thinnest a light touch makes the brush, as a fraction of its size.
const MIN_PRESSURE: f32 = 0.1;

/// What a drag does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Paint colour.
    Brush,
    /// Paint the background (white) back.
    Eraser,
    /// Mark an area to repaint when inpainting.
    Mask,
    /// Unmark it.
    Unmask,
}

/// Files and pixels handed to a generation.
pub struct CanvasInputs {
    /// The picture at the request's size.
    pub image: RgbImage,
    /// Its saved copy (the history points at it).
    pub image_path: PathBuf,
    /// The mask (white = repaint).
    pub mask: GrayImage,
    /// Its saved copy.
    pub mask_path: PathBuf,
}

/// The two layers, tools and history.
pub struct Canvas {
    image: Pixmap,
    mask: Pixmap,
    undo: Vec<(Pixmap, Pixmap)>,
    redo: Vec<(Pixmap, Pixmap)>,
    /// The active tool.
    pub tool: Tool,
    /// Brush diameter in canvas pixels.
    pub size: f32,
    /// Brush colour.
    pub color: [u8; 3],
    /// Brush opacity (0–1).
    pub opacity: f32,
    /// Width factor (0.1–1) for the next stroke points, from touch force; 1 for a mouse.
    pressure: f32,
    stroke: Option<ActiveStroke>,
    version: u64,
    texture: Option<(u64, TextureHandle)>,
}

fn blank(w: u32, h: u32) -> Pixmap {
    let mut p = Pixmap::new(w.max(8), h.max(8)).unwrap_or_else(|| Pixmap::new(8, 8).expect("8×8 fits"));
    p.fill(tiny_skia::Color::WHITE);
    p
}

fn empty(w: u32, h: u32) -> Pixmap {
    Pixmap::new(w.max(8), h.max(8)).unwrap_or_else(|| Pixmap::new(8, 8).expect("8×8 fits"))
}

impl Canvas {
    /// A white canvas with an empty mask.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            image: blank(width, height),
            mask: empty(width, height),
            undo: Vec::new(),
            redo: Vec::new(),
            tool: Tool::Brush,
            size: 16.0,
            color: [20, 20, 20],
            opacity: 1.0,
            pressure: 1.0,
            stroke: None,
            version: 1,
            texture: None,
        }
    }

    /// A number that changes whenever the picture or mask does.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Width and height in pixels.
    pub fn size_px(&self) -> (u32, u32) {
        (self.image.width(), self.image.height())
    }

    fn snapshot(&mut self) {
        self.undo.push((self.image.clone(), self.mask.clone()));
        if self.undo.len() > UNDO_DEPTH {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    fn changed(&mut self) {
        self.version += 1;
    }

    /// Undoes the last stroke, clear or load.
    pub fn undo(&mut self) -> bool {
        self.end_stroke();
        let Some((image, mask)) = self.undo.pop() else { return false };
        self.redo.push((std::mem::replace(&mut self.image, image), std::mem::replace(&mut self.mask, mask)));
        self.changed();
        true
    }

    /// Redoes what was undone.
    pub fn redo(&mut self) -> bool {
        self.end_stroke();
        let Some((image, mask)) = self.redo.pop() else { return false };
        self.undo.push((std::mem::replace(&mut self.image, image), std::mem::replace(&mut self.mask, mask)));
        self.changed();
        true
    }

    /// Whether undo / redo have anything.
    pub fn can_undo_redo(&self) -> (bool, bool) {
        (!self.undo.is_empty(), !self.redo.is_empty())
    }

    /// White picture, empty mask, same size (undoable).
    pub fn clear(&mut self) {
        self.end_stroke();
        self.snapshot();
        let (w, h) = self.size_px();
        self.image = blank(w, h);
        self.mask = empty(w, h);
        self.changed();
    }

    /// Replaces the picture (and resizes the canvas to it, in multiples of 8); undoable.
    pub fn load(&mut self, picture: &RgbImage) {
        self.end_stroke();
        self.snapshot();
        let (w, h) = ((picture.width() / 8 * 8).max(8), (picture.height() / 8 * 8).max(8));
        let mut pixmap = empty(w, h);
        for (i, px) in pixmap.pixels_mut().iter_mut().enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            let [r, g, b] = picture.get_pixel(x, y).0;
            *px = tiny_skia::ColorU8::from_rgba(r, g, b, 255).premultiply();
        }
        self.image = pixmap;
        self.mask = empty(w, h);
        self.changed();
    }

    /// Sets the width factor (touch force, 0–1) for the stroke points that follow.
    pub fn set_pressure(&mut self, pressure: f32) {
        self.pressure = pressure.clamp(MIN_PRESSURE, 1.0);
    }

    /// Whether a stroke is being drawn (pressed and not yet released).
    pub fn is_stroking(&self) -> bool {
        self.stroke.is_some()
    }

    fn point(&self, x: f32, y: f32) -> StrokePoint {
        StrokePoint { x, y, pressure: self.pressure }
    }

    /// The brush settings as a stroke applies them. The mask ignores colour and opacity.
    fn ink(&self) -> Ink {
        let [r, g, b] = self.color;
        let (on_mask, color, opacity, blend) = match self.tool {
            Tool::Brush => {
                (false, tiny_skia::Color::from_rgba8(r, g, b, 255), self.opacity, BlendMode::SourceOver)
            }
            Tool::Eraser => (false, tiny_skia::Color::WHITE, self.opacity, BlendMode::SourceOver),
            Tool::Mask => (true, tiny_skia::Color::WHITE, 1.0, BlendMode::SourceOver),
            Tool::Unmask => (true, tiny_skia::Color::WHITE, 1.0, BlendMode::DestinationOut),
        };
        Ink { on_mask, color, opacity: opacity.clamp(0.0, 1.0), blend, size: self.size.max(1.0) }
    }

    /// Starts a stroke at canvas coordinates: one undo step, and a dab where it starts.
    pub fn begin_stroke(&mut self, x: f32, y: f32) {
        self.end_stroke();
        self.snapshot();
        let ink = self.ink();
        let base = if ink.on_mask { self.mask.clone() } else { self.image.clone() };
        let (w, h) = self.size_px();
        let start = self.point(x, y);
        self.stroke = Some(ActiveStroke { ink, base, coverage: empty(w, h), recent: vec![start] });
        let radius = (ink.size * start.pressure).max(1.0) / 2.0;
        if let Some(dab) = PathBuilder::from_circle(x, y, radius) {
            self.cover(&dab, None);
        }
    }

    /// Continues the stroke to canvas coordinates, along a smooth curve through the points so far.
    pub fn stroke_to(&mut self, x: f32, y: f32) {
        let point = self.point(x, y);
        let Some(stroke) = &mut self.stroke else { return };
        if stroke.recent.last().is_some_and(|last| last.distance(point) < MIN_POINT_GAP) {
            return;
        }
        stroke.recent.push(point);
        // The new point is the neighbour the curve into the previous one was waiting for.
        let segment = match stroke.recent[..] {
            [p0, p1, p2, p3] => Some([p0, p1, p2, p3]),
            [p1, p2, p3] => Some([p2.mirrored_through(p1), p1, p2, p3]),
            _ => None,
        };
        if stroke.recent.len() > 3 {
            stroke.recent.remove(0);
        }
        if let Some(segment) = segment {
            self.paint_segment(segment);
        }
    }

    /// Ends the stroke, drawing the curve into its last point.
    pub fn end_stroke(&mut self) {
        let Some(stroke) = &self.stroke else { return };
        let segment = match stroke.recent[..] {
            [p0, p1, p2] => Some([p0, p1, p2, p1.mirrored_through(p2)]),
            [p1, p2] => Some([p2.mirrored_through(p1), p1, p2, p1.mirrored_through(p2)]),
            _ => None,
        };
        if let Some(segment) = segment {
            self.paint_segment(segment);
        }
        self.stroke = None;
    }

    /// Draws the curve from `p[1]` to `p[2]`, as wide as their mean pressure makes the brush.
    fn paint_segment(&mut self, p: [StrokePoint; 4]) {
        let Some(stroke) = &self.stroke else { return };
        let width = (stroke.ink.size * (p[1].pressure + p[2].pressure) / 2.0).max(1.0);
        if let Some(path) = curve_path(p) {
            self.cover(&path, Some(width));
        }
    }

    /// Adds `path` to the stroke's coverage (stroked `width` wide, or filled without a width) and
    /// refreshes the layer where it landed.
    fn cover(&mut self, path: &SkPath, width: Option<f32>) {
        let Some(stroke) = &mut self.stroke else { return };
        let mut paint = Paint { anti_alias: true, ..Paint::default() };
        paint.set_color(stroke.ink.color);
        let id = Transform::identity();
        let reach = match width {
            Some(width) => {
                let line = Stroke {
                    width,
                    line_cap: LineCap::Round,
                    line_join: LineJoin::Round,
                    ..Stroke::default()
                };
                stroke.coverage.stroke_path(path, &paint, &line, id, None);
                width / 2.0 + 1.0
            }
            None => {
                stroke.coverage.fill_path(path, &paint, FillRule::Winding, id, None);
                1.0
            }
        };
        let Some(area) = path.bounds().outset(reach, reach) else { return };
        let layer = if stroke.ink.on_mask { &mut self.mask } else { &mut self.image };
        composite(layer, &stroke.base, &stroke.coverage, area, stroke.ink);
        self.changed();
    }

    /// The picture as RGB.
    pub fn picture(&self) -> RgbImage {
        let (w, h) = self.size_px();
        RgbImage::from_fn(w, h, |x, y| {
            let c = self.image.pixel(x, y).map(|p| p.demultiply());
            c.map_or(image::Rgb([255, 255, 255]), |c| image::Rgb([c.red(), c.green(), c.blue()]))
        })
    }

    /// The mask as grey (white = repaint).
    pub fn mask(&self) -> GrayImage {
        let (w, h) = self.size_px();
        GrayImage::from_fn(w, h, |x, y| image::Luma([self.mask.pixel(x, y).map_or(0, |p| p.alpha())]))
    }

    /// The picture at a request's size (Lanczos when it differs), as generation reads it.
    pub fn picture_at(&self, width: u32, height: u32) -> RgbImage {
        let image = self.picture();
        if image.dimensions() == (width, height) {
            return image;
        }
        image::imageops::resize(&image, width, height, image::imageops::FilterType::Lanczos3)
    }

    /// Saves both layers (content-addressed, so repeats cost nothing) at the request's size.
    pub fn inputs(&self, dir: &Path, width: u32, height: u32) -> Result<CanvasInputs> {
        use image::imageops::{resize, FilterType};
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the inputs folder", e, dir))?;
        let image = self.picture_at(width, height);
        let mut mask = self.mask();
        if mask.dimensions() != (width, height) {
            mask = resize(&mask, width, height, FilterType::Triangle);
        }
        let image_path = save_addressed(dir, "canvas", image.as_raw(), |p| {
            crate::export::png::save_png(p, &image, &[], false)
        })?;
        let mask_path = save_addressed(dir, "mask", mask.as_raw(), |p| {
            mask.save(p).map_err(|e| Error::bad_file(format!("cannot write the mask ({e})"), p))
        })?;
        Ok(CanvasInputs { image, image_path, mask, mask_path })
    }

    fn texture(&mut self, ctx: &egui::Context) -> TextureHandle {
        if let Some((v, t)) = &self.texture {
            if *v == self.version {
                return t.clone();
            }
        }
        let (w, h) = self.size_px();
        let mut rgba = Vec::with_capacity((w * h * 4) as usize);
        for (p, m) in self.image.pixels().iter().zip(self.mask.pixels()) {
            let c = p.demultiply();
            // The mask shows as a red wash over the picture.
            let a = f32::from(m.alpha()) / 255.0 * 0.5;
            let mix = |v: u8, target: f32| (f32::from(v) * (1.0 - a) + target * a).round() as u8;
            rgba.extend_from_slice(&[mix(c.red(), 255.0), mix(c.green(), 0.0), mix(c.blue(), 0.0), 255]);
        }
        let image = egui::ColorImage::from_rgba_unmultiplied([w as usize, h as usize], &rgba);
        let handle = match self.texture.take() {
            Some((_, mut t)) => {
                t.set(image, TextureOptions::NEAREST);
                t
            }
            None => ctx.load_texture("canvas", image, TextureOptions::NEAREST),
        };
        self.texture = Some((self.version, handle.clone()));
        handle
    }
}

fn save_addressed(
    dir: &Path,
    prefix: &str,
    bytes: &[u8],
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{prefix}-{hex}.png"));
    if !path.exists() {
        write(&path)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: [u8; 3] = [255, 255, 255];

    #[test]
    fn a_fast_diagonal_given_two_points_paints_both_ends_and_the_middle() {
        let mut c = Canvas::new(64, 64);
        c.color = [255, 0, 0];
        c.size = 6.0;
        c.begin_stroke(4.0, 4.0);
        c.stroke_to(60.0, 60.0);
        c.end_stroke();
        let picture = c.picture();
        for (x, y) in [(4, 4), (18, 18), (32, 32), (46, 46), (60, 60)] {
            assert_eq!(picture.get_pixel(x, y).0, [255, 0, 0], "({x}, {y})");
        }
        assert_eq!(picture.get_pixel(60, 4).0, WHITE);
        assert!(c.undo());
        assert_eq!(c.picture().get_pixel(32, 32).0, WHITE, "one undo step takes the whole stroke");
    }

    #[test]
    fn a_curve_through_sparse_points_is_smooth_and_one_undo_step() {
        let mut c = Canvas::new(64, 64);
        c.size = 2.0;
        c.begin_stroke(4.0, 32.0);
        for (x, y) in [(20.0, 8.0), (44.0, 56.0), (60.0, 32.0)] {
            c.stroke_to(x, y);
        }
        c.end_stroke();
        // The curve passes through every input point…
        for (x, y) in [(4, 32), (20, 8), (44, 56), (60, 32)] {
            assert_ne!(c.picture().get_pixel(x, y).0, WHITE, "({x}, {y})");
        }
        // …and bends round them instead of cutting straight corners: the chord from (4, 32)
        // to (20, 8) passes (12, 20); the spline swings out past it.
        assert_eq!(c.picture().get_pixel(12, 20).0, WHITE);
        assert!(c.undo());
        assert!(!c.can_undo_redo().0);
    }

    #[test]
    fn a_translucent_stroke_does_not_darken_where_it_goes_over_itself() {
        let mut c = Canvas::new(64, 64);
        c.color = [0, 0, 0];
        c.opacity = 0.5;
        c.size = 6.0;
        // Out and back along the same line: every pixel on it is covered twice.
        c.begin_stroke(8.0, 32.0);
        c.stroke_to(56.0, 32.0);
        c.stroke_to(8.0, 32.0);
        c.end_stroke();
        for x in [8, 20, 32, 44] {
            let [v, ..] = c.picture().get_pixel(x, 32).0;
            assert!((120..=136).contains(&v), "half strength at x = {x}: {v}");
        }
    }

    #[test]
    fn strokes_paint_and_undo_restores() {
        let mut c = Canvas::new(64, 64);
        c.color = [255, 0, 0];
        c.size = 10.0;
        c.begin_stroke(10.0, 32.0);
        c.stroke_to(50.0, 32.0);
        c.end_stroke();
        assert_eq!(c.picture().get_pixel(30, 32).0, [255, 0, 0]);
        assert_eq!(c.picture().get_pixel(30, 5).0, [255, 255, 255]);
        assert!(c.undo());
        assert_eq!(c.picture().get_pixel(30, 32).0, [255, 255, 255]);
        assert!(c.redo());
        assert_eq!(c.picture().get_pixel(30, 32).0, [255, 0, 0]);
    }

    #[test]
    fn mask_strokes_only_touch_the_mask() {
        let mut c = Canvas::new(32, 32);
        c.tool = Tool::Mask;
        c.size = 8.0;
        c.begin_stroke(16.0, 16.0);
        c.end_stroke();
        assert_eq!(c.mask().get_pixel(16, 16).0, [255]);
        assert_eq!(c.mask().get_pixel(1, 1).0, [0]);
        assert_eq!(c.picture().get_pixel(16, 16).0, [255, 255, 255]);
        c.tool = Tool::Unmask;
        c.begin_stroke(16.0, 16.0);
        assert_eq!(c.mask().get_pixel(16, 16).0, [0]);
    }

    #[test]
    fn inputs_are_resized_and_saved_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = Canvas::new(64, 48);
        let a = c.inputs(dir.path(), 32, 24).expect("inputs");
        assert_eq!(a.image.dimensions(), (32, 24));
        let b = c.inputs(dir.path(), 32, 24).expect("inputs again");
        assert_eq!(a.image_path, b.image_path);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 2);
    }
}
