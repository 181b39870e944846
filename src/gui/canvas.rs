//! The canvas: sketch with a round brush (size, colour, opacity), erase, paint an inpainting mask,
//! undo/redo, clear, or load a picture; then use it as the img2img start or the picture to
//! inpaint. Painting is rasterised by tiny-skia; the window only shows the result.

use std::path::{Path, PathBuf};

use egui::{Color32, Rect, Sense, TextureHandle, TextureOptions, Ui};
use image::{GrayImage, RgbImage};
use tiny_skia::{LineCap, Paint, PathBuilder, Pixmap, Stroke, Transform};

use super::command::{Commands, UiCommand};
use super::state::AppState;
use crate::error::{Error, Result};

/// Undo steps kept (each is a copy of both layers).
const UNDO_DEPTH: usize = 30;

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
    last: Option<(f32, f32)>,
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
            last: None,
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
        let Some((image, mask)) = self.undo.pop() else { return false };
        self.redo.push((std::mem::replace(&mut self.image, image), std::mem::replace(&mut self.mask, mask)));
        self.changed();
        true
    }

    /// Redoes what was undone.
    pub fn redo(&mut self) -> bool {
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
        self.snapshot();
        let (w, h) = self.size_px();
        self.image = blank(w, h);
        self.mask = empty(w, h);
        self.changed();
    }

    /// Replaces the picture (and resizes the canvas to it, in multiples of 8); undoable.
    pub fn load(&mut self, picture: &RgbImage) {
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

    /// Starts a stroke at canvas coordinates.
    pub fn begin_stroke(&mut self, x: f32, y: f32) {
        self.snapshot();
        self.last = Some((x, y));
        self.stroke_to(x, y);
    }

    /// Continues the stroke to canvas coordinates.
    pub fn stroke_to(&mut self, x: f32, y: f32) {
        let (x0, y0) = self.last.unwrap_or((x, y));
        let mut pb = PathBuilder::new();
        pb.move_to(x0, y0);
        // A zero-length segment still draws a round dot for a click.
        pb.line_to(x + 0.01, y);
        let Some(path) = pb.finish() else { return };
        let stroke = Stroke { width: self.size.max(1.0), line_cap: LineCap::Round, ..Stroke::default() };
        let mut paint = Paint { anti_alias: true, ..Paint::default() };
        let alpha = (self.opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
        let [r, g, b] = self.color;
        let (layer, color, clear) = match self.tool {
            Tool::Brush => (&mut self.image, tiny_skia::Color::from_rgba8(r, g, b, alpha), false),
            Tool::Eraser => (&mut self.image, tiny_skia::Color::from_rgba8(255, 255, 255, alpha), false),
            Tool::Mask => (&mut self.mask, tiny_skia::Color::from_rgba8(255, 255, 255, 255), false),
            Tool::Unmask => (&mut self.mask, tiny_skia::Color::from_rgba8(0, 0, 0, 255), true),
        };
        paint.set_color(color);
        if clear {
            paint.blend_mode = tiny_skia::BlendMode::Clear;
        }
        layer.stroke_path(&path, &paint, &stroke, Transform::identity(), None);
        self.last = Some((x, y));
        self.changed();
    }

    /// Ends the stroke.
    pub fn end_stroke(&mut self) {
        self.last = None;
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
    ui.horizontal_wrapped(|ui| {
        ui.selectable_value(&mut c.tool, Tool::Brush, "Brush");
        ui.selectable_value(&mut c.tool, Tool::Eraser, "Eraser");
        ui.selectable_value(&mut c.tool, Tool::Mask, "Mask");
        ui.selectable_value(&mut c.tool, Tool::Unmask, "Unmask");
        ui.separator();
        ui.add(egui::Slider::new(&mut c.size, 1.0..=200.0).logarithmic(true).text("Size"));
        ui.color_edit_button_srgb(&mut c.color).on_hover_text("Brush colour");
        ui.add(egui::Slider::new(&mut c.opacity, 0.05..=1.0).text("Opacity"));
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
    let ctx = ui.ctx().clone();
    let tex = canvas.texture(&ctx);
    let (w, h) = canvas.size_px();
    let avail = ui.available_size();
    let scale = (avail.x / w as f32).min(avail.y / h as f32).clamp(0.05, 8.0);
    let (rect, response) =
        ui.allocate_exact_size(egui::vec2(w as f32, h as f32) * scale, Sense::click_and_drag());
    ui.painter().image(
        tex.id(),
        rect,
        Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
        Color32::WHITE,
    );
    let to_canvas = |p: egui::Pos2| ((p.x - rect.left()) / scale, (p.y - rect.top()) / scale);
    if let Some(pos) = response.interact_pointer_pos() {
        let (x, y) = to_canvas(pos);
        if response.drag_started() || (response.clicked() && canvas.last.is_none()) {
            canvas.begin_stroke(x, y);
        } else if response.dragged() {
            canvas.stroke_to(x, y);
        }
    }
    if response.drag_stopped() || response.clicked() {
        canvas.end_stroke();
    }
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Canvas"));
}

#[cfg(test)]
mod tests {
    use super::*;

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
