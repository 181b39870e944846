//! The canvas: sketch with a round brush (size, colour, opacity), erase, paint an inpainting mask,
//! undo/redo, clear, or load a picture; then use it as the img2img start or the picture to
//! inpaint. Painting is rasterised by tiny-skia; the window only shows the result.

use std::path::{Path, PathBuf};

use egui::{Color32, Pos2, Rect, Sense, TextureHandle, TextureOptions, Ui};
use image::{GrayImage, RgbImage};
use tiny_skia::{
    BlendMode, FillRule, LineCap, LineJoin, Paint, Path as SkPath, PathBuilder, Pixmap, PixmapPaint,
};
use tiny_skia::{Stroke, Transform};

use super::command::{Commands, UiCommand};
use super::state::AppState;
use crate::error::{Error, Result};

/// Undo steps kept (each is a copy of both layers).
const UNDO_DEPTH: usize = 30;

/// Distance, in canvas pixels, between the points sampled along a stroke's curve.
const SAMPLE_SPACING: f32 = 2.0;

/// Most points sampled along one curve segment (a jump across a huge canvas).
const MAX_SAMPLES: usize = 2048;

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

/// One input point of a stroke, in canvas pixels; `pressure` scales the brush width.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StrokePoint {
    x: f32,
    y: f32,
    pressure: f32,
}

impl StrokePoint {
    fn distance(self, other: StrokePoint) -> f32 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    /// `self` mirrored through `centre`: a stand-in neighbour at a stroke's open end.
    fn mirrored_through(self, centre: StrokePoint) -> StrokePoint {
        StrokePoint { x: 2.0 * centre.x - self.x, y: 2.0 * centre.y - self.y, pressure: centre.pressure }
    }
}

/// How a stroke marks its layer, fixed when it starts.
#[derive(Clone, Copy, Debug)]
struct Ink {
    /// Paints the mask rather than the picture.
    on_mask: bool,
    /// The colour at full strength.
    color: tiny_skia::Color,
    /// How strongly the stroke's coverage is laid over the layer.
    opacity: f32,
    blend: BlendMode,
    /// Brush diameter at full pressure.
    size: f32,
}

/// The stroke being drawn.
struct ActiveStroke {
    ink: Ink,
    /// The painted layer as it was before the stroke.
    base: Pixmap,
    /// Everything the stroke has covered so far, at full strength. It is laid over `base` with
    /// the brush opacity, so a translucent stroke doesn't darken where its segments overlap.
    coverage: Pixmap,
    /// The last (up to) three input points. The curve into the newest one is drawn only once
    /// the point after it is known, because Catmull–Rom needs a neighbour on each side.
    recent: Vec<StrokePoint>,
}

/// The point at `t` (0–1) between `p[1]` and `p[2]` on the centripetal Catmull–Rom spline through
/// `p` (Barry–Goldman's pyramid). Centripetal knots keep the curve from looping or overshooting
/// where fast and slow pointer moves leave the points unevenly spaced.
fn catmull_rom(p: [StrokePoint; 4], t: f32) -> (f32, f32) {
    let knot = |a: StrokePoint, b: StrokePoint| a.distance(b).sqrt().max(1e-3);
    let (t0, t1) = (0.0, knot(p[0], p[1]));
    let t2 = t1 + knot(p[1], p[2]);
    let t3 = t2 + knot(p[2], p[3]);
    let t = t1 + (t2 - t1) * t;
    let lerp = |a: (f32, f32), b: (f32, f32), ta: f32, tb: f32| {
        let w = (t - ta) / (tb - ta);
        (a.0 + (b.0 - a.0) * w, a.1 + (b.1 - a.1) * w)
    };
    let [q0, q1, q2, q3] = p.map(|q| (q.x, q.y));
    let a1 = lerp(q0, q1, t0, t1);
    let a2 = lerp(q1, q2, t1, t2);
    let a3 = lerp(q2, q3, t2, t3);
    let b1 = lerp(a1, a2, t0, t2);
    let b2 = lerp(a2, a3, t1, t3);
    lerp(b1, b2, t1, t2)
}

/// The curve from `p[1]` to `p[2]` as a polyline, sampled every couple of pixels.
fn curve_path(p: [StrokePoint; 4]) -> Option<SkPath> {
    let steps = (p[1].distance(p[2]) / SAMPLE_SPACING).ceil().clamp(1.0, MAX_SAMPLES as f32) as usize;
    let mut pb = PathBuilder::new();
    pb.move_to(p[1].x, p[1].y);
    for i in 1..steps {
        let (x, y) = catmull_rom(p, i as f32 / steps as f32);
        pb.line_to(x, y);
    }
    pb.line_to(p[2].x, p[2].y);
    pb.finish()
}

/// Redraws `area` of `layer` as `base` with the stroke's `coverage` laid over it.
fn composite(layer: &mut Pixmap, base: &Pixmap, coverage: &Pixmap, area: tiny_skia::Rect, ink: Ink) {
    let whole = tiny_skia::IntRect::from_xywh(0, 0, layer.width(), layer.height());
    let Some(area) = area.round_out().zip(whole).and_then(|(a, whole)| a.intersect(&whole)) else { return };
    let (Some(under), Some(over)) = (base.clone_rect(area), coverage.clone_rect(area)) else { return };
    let (x, y, id) = (area.x(), area.y(), Transform::identity());
    let restore = PixmapPaint { blend_mode: BlendMode::Source, ..PixmapPaint::default() };
    layer.draw_pixmap(x, y, under.as_ref(), &restore, id, None);
    let lay = PixmapPaint { opacity: ink.opacity, blend_mode: ink.blend, ..PixmapPaint::default() };
    layer.draw_pixmap(x, y, over.as_ref(), &lay, id, None);
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

    fn is_stroking(&self) -> bool {
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

    /// Saves both layers (content-addressed, so repeats cost nothing) at the request's size.
    pub fn inputs(&self, dir: &Path, width: u32, height: u32) -> Result<CanvasInputs> {
        use image::imageops::{resize, FilterType};
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the inputs folder", e, dir))?;
        let mut image = self.picture();
        let mut mask = self.mask();
        if image.dimensions() != (width, height) {
            image = resize(&image, width, height, FilterType::Lanczos3);
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

/// The Canvas tab.
pub fn canvas_tab_ui(ui: &mut Ui, canvas: &mut Canvas, state: &AppState, out: &mut Commands) {
    let c = &mut *canvas;
    // Tools and history on one row, the brush on the next: a slider with its label does not wrap,
    // so one long row cut the opacity control off in a small window.
    ui.horizontal_wrapped(|ui| {
        ui.selectable_value(&mut c.tool, Tool::Brush, "Brush");
        ui.selectable_value(&mut c.tool, Tool::Eraser, "Eraser");
        ui.selectable_value(&mut c.tool, Tool::Mask, "Mask");
        ui.selectable_value(&mut c.tool, Tool::Unmask, "Unmask");
        ui.separator();
        let (can_undo, can_redo) = c.can_undo_redo();
        let undo_keys = ui.input(|i| i.modifiers.command && i.key_pressed(egui::Key::Z));
        if ui.add_enabled(can_undo, egui::Button::new("Undo")).clicked() || (undo_keys && can_undo) {
            c.undo();
        }
        if ui.add_enabled(can_redo, egui::Button::new("Redo")).clicked() {
            c.redo();
        }
        if ui.button("Clear").clicked() {
            c.clear();
        }
    });
    ui.horizontal_wrapped(|ui| {
        ui.add(egui::Slider::new(&mut c.size, 1.0..=200.0).logarithmic(true).text("Size"));
        ui.color_edit_button_srgb(&mut c.color).on_hover_text("Brush colour");
        ui.add(egui::Slider::new(&mut c.opacity, 0.05..=1.0).text("Opacity"));
    });
    ui.horizontal(|ui| {
        if ui.button("Load picture…").clicked() {
            out.push(UiCommand::ChooseCanvasPicture);
        }
        let selected = state.selected.is_some_and(|id| state.history.get(id).is_some());
        if ui.add_enabled(selected, egui::Button::new("Use the current picture")).clicked() {
            out.push(UiCommand::SelectedToCanvas);
        }
        if ui.button("New canvas at the generation size").clicked() {
            let (w, h) = (state.settings.width as u32, state.settings.height as u32);
            *canvas = Canvas {
                tool: canvas.tool,
                size: canvas.size,
                color: canvas.color,
                opacity: canvas.opacity,
                ..Canvas::new(w, h)
            };
        }
    });
    ui.weak("Choose “Canvas” or “Inpaint” under “Start from” on the left to generate from this canvas.");
    canvas_area_ui(ui, canvas);
}

fn canvas_area_ui(ui: &mut Ui, canvas: &mut Canvas) {
    let (w, h) = canvas.size_px();
    let avail = ui.available_size();
    let scale = (avail.x / w as f32).min(avail.y / h as f32).clamp(0.05, 8.0);
    let (rect, response) =
        ui.allocate_exact_size(egui::vec2(w as f32, h as f32) * scale, Sense::click_and_drag());
    // Events arrive in window coordinates; the canvas's layer may be transformed (zoomed, moved).
    let from_window = ui.ctx().layer_transform_from_global(ui.layer_id()).unwrap_or_default();
    let to_canvas = |p: Pos2| {
        let p = from_window * p;
        ((p.x - rect.left()) / scale, (p.y - rect.top()) / scale)
    };
    // egui's hit test says whether a press landed on the canvas rather than on a popup over it;
    // a press and release within one frame only shows up as a click.
    let press_is_ours = response.enabled() && (response.is_pointer_button_down_on() || response.clicked());
    let events = ui.input(|i| i.events.clone());
    feed_pointer_events(canvas, &events, press_is_ours, to_canvas);
    if canvas.is_stroking() && !ui.input(|i| i.pointer.primary_down()) {
        // The release never reached us (the window lost the pointer): keep what was drawn.
        canvas.end_stroke();
    }
    // The texture is made after this frame's points are drawn, so the stroke shows at once.
    let tex = canvas.texture(ui.ctx());
    ui.painter().image(
        tex.id(),
        rect,
        Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
        Color32::WHITE,
    );
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Canvas"));
}

/// Feeds one frame's pointer events to the canvas in order, so a stroke runs from the press,
/// through every position the window reported, to the release. (egui's drag state would start
/// it only past the drag threshold, keep one position per frame, and skip the release.)
fn feed_pointer_events(
    canvas: &mut Canvas,
    events: &[egui::Event],
    press_is_ours: bool,
    to_canvas: impl Fn(Pos2) -> (f32, f32),
) {
    use egui::{Event, PointerButton, TouchPhase};
    // The force of the touch behind the next pointer event: egui-winit sends `Touch` just before
    // the `PointerButton` / `PointerMoved` it emulates.
    let mut touch_force = None;
    for event in events {
        match *event {
            Event::Touch { phase: TouchPhase::Start | TouchPhase::Move, force, .. } => touch_force = force,
            Event::PointerButton { pos, button: PointerButton::Primary, pressed: true, .. } => {
                // A stroke still open here lost its release; a mouse press paints at full width.
                canvas.end_stroke();
                canvas.set_pressure(touch_force.take().unwrap_or(1.0));
                if press_is_ours {
                    let (x, y) = to_canvas(pos);
                    canvas.begin_stroke(x, y);
                }
            }
            Event::PointerMoved(pos) if canvas.is_stroking() => {
                if let Some(force) = touch_force.take() {
                    canvas.set_pressure(force);
                }
                let (x, y) = to_canvas(pos);
                canvas.stroke_to(x, y);
            }
            Event::PointerButton { pos, button: PointerButton::Primary, pressed: false, .. }
                if canvas.is_stroking() =>
            {
                let (x, y) = to_canvas(pos);
                canvas.stroke_to(x, y);
                canvas.end_stroke();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use egui::{Event, Modifiers, PointerButton};
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, session, PanelState};
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
    fn touch_force_thins_the_line() {
        let touch = |phase, force| Event::Touch {
            device_id: egui::TouchDeviceId(0),
            id: egui::TouchId(0),
            phase,
            pos: Pos2::ZERO,
            force: Some(force),
        };
        let width_at_x_32 = |events: &[Event]| {
            let mut c = Canvas::new(64, 64);
            c.size = 20.0;
            feed_pointer_events(&mut c, events, true, |p| (p.x, p.y));
            assert!(!c.is_stroking());
            (0..64).filter(|&y| c.picture().get_pixel(32, y).0 != WHITE).count()
        };
        let mouse = [button(egui::pos2(8.0, 32.0), true), button(egui::pos2(56.0, 32.0), false)];
        let light = [
            touch(egui::TouchPhase::Start, 0.25),
            button(egui::pos2(8.0, 32.0), true),
            touch(egui::TouchPhase::Move, 0.25),
            Event::PointerMoved(egui::pos2(40.0, 32.0)),
            button(egui::pos2(56.0, 32.0), false),
        ];
        assert!((19..=22).contains(&width_at_x_32(&mouse)), "full width: {}", width_at_x_32(&mouse));
        assert!((4..=7).contains(&width_at_x_32(&light)), "a quarter: {}", width_at_x_32(&light));
    }

    /// The primary button pressed or released at `pos`.
    fn button(pos: Pos2, pressed: bool) -> Event {
        Event::PointerButton { pos, button: PointerButton::Primary, pressed, modifiers: Modifiers::NONE }
    }

    type CanvasTab = egui_kittest::Harness<'static, PanelState<AppState, Canvas>>;

    /// The canvas tab over a 64×64 canvas, laid out once, and the canvas's rect on screen.
    fn canvas_tab() -> (tempfile::TempDir, CanvasTab, Rect) {
        let (dir, state) = session();
        let mut canvas = Canvas::new(64, 64);
        canvas.color = [255, 0, 0];
        canvas.size = 6.0;
        let mut h = harness(state, canvas, |ui, state, canvas, out| canvas_tab_ui(ui, canvas, state, out));
        h.run();
        let rect = h.get_by_role_and_label(egui::Role::Image, "Canvas").rect();
        (dir, h, rect)
    }

    /// Runs one frame that receives `event`.
    fn push(h: &mut CanvasTab, event: Event) {
        h.input_mut().events.push(event);
        h.step();
    }

    #[test]
    fn a_fast_drag_paints_from_the_press_to_the_release() {
        let (_dir, mut h, rect) = canvas_tab();
        let at = |fx: f32, fy: f32| rect.lerp_inside(egui::vec2(fx, fy));
        let (start, end) = (at(0.1, 0.1), at(0.9, 0.9));
        push(&mut h, Event::PointerMoved(start));
        push(&mut h, button(start, true));
        // One fast move, far past egui's drag threshold, then a jump to the release point.
        push(&mut h, Event::PointerMoved(at(0.5, 0.5)));
        push(&mut h, button(end, false));
        h.run();
        let canvas = &h.state().view;
        assert!(!canvas.is_stroking());
        let picture = canvas.picture();
        let pixel = |p: Pos2| {
            let (x, y) =
                ((p.x - rect.left()) / rect.width() * 64.0, (p.y - rect.top()) / rect.height() * 64.0);
            picture.get_pixel(x as u32, y as u32).0
        };
        for (name, p) in
            [("press", start), ("middle", at(0.3, 0.3)), ("move", at(0.5, 0.5)), ("release", end)]
        {
            assert_eq!(pixel(p), [255, 0, 0], "{name}");
        }
        assert_eq!(pixel(at(0.9, 0.1)), WHITE);
        assert_eq!(canvas.can_undo_redo(), (true, false));
    }

    #[test]
    fn a_click_paints_one_dab() {
        let (_dir, mut h, rect) = canvas_tab();
        let spot = rect.center();
        push(&mut h, Event::PointerMoved(spot));
        push(&mut h, button(spot, true));
        push(&mut h, button(spot, false));
        h.run();
        let picture = h.state().view.picture();
        assert_eq!(picture.get_pixel(32, 32).0, [255, 0, 0]);
        assert_eq!(picture.get_pixel(32, 40).0, WHITE);
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
