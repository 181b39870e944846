//! The ControlNet panel: units, each with its model (a file or folder, or one from the ControlNet
//! folder), its picture (the canvas — so a sketch steers the next render — a file, or the picture
//! shown in the Image tab), a preprocessor with a live preview of the map it makes, weight, start
//! and end sliders, control and resize modes, enable and remove.

use std::path::PathBuf;

use egui::{TextureHandle, Ui};

use super::canvas::Canvas;
use super::command::{Commands, UiCommand};
use super::state::AppState;
use crate::engine::controlnet::prepare::{self, DEFAULT_DIR};
use crate::engine::controlnet::{ControlMode, ControlSpec, Preprocessor, ResizeMode};

/// Where a unit's picture comes from.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ControlSource {
    /// The canvas as it is when Generate is pressed.
    #[default]
    Canvas,
    /// A picture file (also the gallery picture chosen with "Current picture").
    File(PathBuf),
}

/// One unit as the studio keeps it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ControlSlot {
    /// Whether it takes part in the next render.
    pub enabled: bool,
    /// Its settings (the picture comes from `source`).
    pub spec: ControlSpec,
    /// Where its picture comes from.
    pub source: ControlSource,
    /// A hub id typed to download a ControlNet from.
    pub hub_id: String,
}

impl ControlSlot {
    /// A new enabled unit on the canvas with a scribble map, how a painter starts.
    pub fn new() -> Self {
        Self {
            enabled: true,
            spec: ControlSpec { preprocess: Preprocessor::Scribble { threshold: 64 }, ..Default::default() },
            source: ControlSource::Canvas,
            hub_id: String::new(),
        }
    }

    /// The request's unit (a canvas unit's picture is filled in when Generate saves the canvas).
    pub fn unit(&self) -> ControlSpec {
        let image = match &self.source {
            ControlSource::Canvas => None,
            ControlSource::File(p) => Some(p.clone()),
        };
        ControlSpec { image, ..self.spec.clone() }
    }
}

/// The panel's previews, made again only when a unit or its picture changes.
#[derive(Default)]
pub struct ControlView {
    previews: Vec<Option<(String, Result<TextureHandle, String>)>>,
}

impl std::fmt::Debug for ControlView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlView({} previews)", self.previews.len())
    }
}

/// The panel in the left column.
pub fn control_panel_ui(
    ui: &mut Ui,
    state: &mut AppState,
    canvas: &Canvas,
    view: &mut ControlView,
    out: &mut Commands,
) {
    let count = state.settings.controls.len();
    let title = if count == 0 { "ControlNet".to_string() } else { format!("ControlNet ({count})") };
    egui::CollapsingHeader::new(title).id_salt("controlnet").default_open(count > 0).show(ui, |ui| {
        if count == 0 {
            ui.label(format!(
                "Steer the picture with a sketch, edges or line art. Put ControlNet models in \
                 {DEFAULT_DIR}, choose a file, or pull one by hub id."
            ));
        }
        let mut added = false;
        if ui
            .button("Add unit")
            .on_hover_text("A unit reads the canvas (or a picture) through a ControlNet")
            .clicked()
        {
            state.settings.controls.push(ControlSlot::new());
            added = true;
        }
        let current = state.selected.and_then(|id| state.history.get(id)).map(|i| i.path.clone());
        let (w, h) = (state.settings.width as u32, state.settings.height as u32);
        let units = state.settings.controls.len();
        view.previews.resize_with(units, || None);
        let mut remove = None;
        for (i, slot) in state.settings.controls.iter_mut().enumerate() {
            ui.push_id(("unit", i), |ui| {
                ui.separator();
                let model_name = if slot.spec.model.as_os_str().is_empty() {
                    "no model".to_string()
                } else {
                    crate::engine::model::display_name(&slot.spec.model)
                };
                // Each unit folds away, so several fit the panel.
                let id = ui.make_persistent_id("unit-body");
                let (_, header, _) =
                    egui::collapsing_header::CollapsingState::load_with_default_open(ui.ctx(), id, true)
                        .show_header(ui, |ui| {
                            ui.checkbox(&mut slot.enabled, format!("Unit {i}: {model_name}"));
                            if ui.small_button("×").on_hover_text(format!("Remove unit {i}")).clicked() {
                                remove = Some(i);
                            }
                        })
                        .body(|ui| {
                            ui.add_enabled_ui(slot.enabled, |ui| {
                                unit_ui(ui, i, slot, current.as_ref(), out);
                                let preview = &mut view.previews[i];
                                preview_ui(ui, i, slot, canvas, (w, h), preview);
                            });
                        });
                if added && i + 1 == units {
                    header.response.scroll_to_me(Some(egui::Align::TOP));
                }
            });
        }
        if let Some(i) = remove {
            state.settings.controls.remove(i);
            view.previews.remove(i);
        }
    });
}

fn unit_ui(ui: &mut Ui, i: usize, slot: &mut ControlSlot, current: Option<&PathBuf>, out: &mut Commands) {
    ui.horizontal(|ui| {
        let shown = if slot.spec.model.as_os_str().is_empty() {
            "choose".to_string()
        } else {
            crate::engine::model::display_name(&slot.spec.model)
        };
        egui::ComboBox::from_label("Model").selected_text(shown).show_ui(ui, |ui| {
            let found = folder_models();
            if found.is_empty() {
                ui.label(format!("No ControlNets in {DEFAULT_DIR}"));
            }
            for path in found {
                let name = crate::engine::model::display_name(&path);
                if ui.selectable_label(slot.spec.model == path, name).clicked() {
                    slot.spec.model = path;
                }
            }
        });
        if ui
            .button("Model file…")
            .on_hover_text("A ControlNet .safetensors / .pth file, or a diffusers folder's weights")
            .clicked()
        {
            out.push(UiCommand::ChooseControlNet(i));
        }
    });
    ui.horizontal(|ui| {
        ui.label("Hub id");
        ui.add(egui::TextEdit::singleline(&mut slot.hub_id).hint_text("owner/name").desired_width(170.0))
            .on_hover_text(
                "A ControlNet repository on the Hugging Face hub, e.g. lllyasviel/control_v11p_sd15_scribble",
            );
        if ui
            .button("Pull")
            .on_hover_text("Download this ControlNet (with progress) and use it here")
            .clicked()
        {
            out.push(UiCommand::PullControlNet(i));
        }
    });
    ui.horizontal(|ui| {
        ui.label("Picture");
        let on_canvas = slot.source == ControlSource::Canvas;
        if ui
            .selectable_label(on_canvas, "Canvas")
            .on_hover_text(
                "The canvas as it is when Generate is pressed: sketch there and the render follows",
            )
            .clicked()
        {
            slot.source = ControlSource::Canvas;
        }
        if ui
            .selectable_label(!on_canvas, "File…")
            .on_hover_text("A picture file to make the map from")
            .clicked()
        {
            out.push(UiCommand::ChooseControlPicture(i));
        }
        if ui
            .add_enabled(current.is_some(), egui::Button::new("Current picture"))
            .on_hover_text("The picture the Image tab shows")
            .clicked()
        {
            if let Some(p) = current {
                slot.source = ControlSource::File(p.clone());
            }
        }
    });
    if let ControlSource::File(p) = &slot.source {
        ui.label(p.file_name().map_or_else(String::new, |n| n.to_string_lossy().to_string()))
            .on_hover_text(p.display().to_string());
    }
    preprocessor_ui(ui, &mut slot.spec.preprocess);
    let spec = &mut slot.spec;
    ui.add(egui::Slider::new(&mut spec.weight, 0.0..=2.0).text("Weight").step_by(0.05).fixed_decimals(2))
        .on_hover_text("How strongly the map steers (ControlNet's conditioning scale)");
    // Each end keeps a hundredth of the steps from the other, so a unit always acts somewhere.
    let (start_max, end_min) = ((spec.end - 0.01).max(0.0), (spec.start + 0.01).min(1.0));
    ui.add(egui::Slider::new(&mut spec.start, 0.0..=start_max).text("Start").step_by(0.01).fixed_decimals(2))
        .on_hover_text("The fraction of the steps that runs before the unit starts acting");
    ui.add(egui::Slider::new(&mut spec.end, end_min..=1.0).text("End").step_by(0.01).fixed_decimals(2))
        .on_hover_text(
            "The fraction of the steps after which the unit stops: ending early leaves details free",
        );
    egui::ComboBox::from_label("Control mode").selected_text(spec.mode.a1111_name()).show_ui(ui, |ui| {
        for m in ControlMode::ALL {
            ui.selectable_value(&mut spec.mode, m, m.a1111_name()).on_hover_text(mode_help(m));
        }
    });
    egui::ComboBox::from_label("Resize").selected_text(spec.resize.a1111_name()).show_ui(ui, |ui| {
        for m in ResizeMode::ALL {
            ui.selectable_value(&mut spec.resize, m, m.a1111_name()).on_hover_text(resize_help(m));
        }
    });
}

fn mode_help(m: ControlMode) -> &'static str {
    match m {
        ControlMode::Balanced => "The map steers the prompt's and the negative prompt's passes alike",
        ControlMode::Prompt => "The map's pull fades towards fine detail, so the prompt keeps more say",
        ControlMode::Control => "Fading pull on the prompt's pass only: guidance pushes towards the map",
        ControlMode::Guess => "diffusers' guess mode: the map alone, without a prompt, still steers",
    }
}

fn resize_help(m: ResizeMode) -> &'static str {
    match m {
        ResizeMode::Just => "Stretch the picture to the generation's size",
        ResizeMode::Crop => "Scale to cover the size and cut the overflow off the middle",
        ResizeMode::Fill => "Scale to fit inside the size; margins take the edge's colour",
    }
}

fn preprocessor_ui(ui: &mut Ui, p: &mut Preprocessor) {
    egui::ComboBox::from_label("Preprocessor").selected_text(p.id()).show_ui(ui, |ui| {
        for kind in Preprocessor::ALL {
            let help = match kind {
                Preprocessor::None => "Use the picture as the map (one made elsewhere)",
                Preprocessor::Canny { .. } => "Edges of a photo or painting (OpenCV's Canny)",
                Preprocessor::Scribble { .. } => {
                    "Strokes on a light canvas, white on black, for scribble models"
                }
                Preprocessor::Lineart { .. } => "A clean drawing's dark lines, for line-art models",
                Preprocessor::Invert => "Dark lines on white become white on black",
                Preprocessor::Tile { .. } => "A softened copy, for tile models (detail and upscaling)",
                Preprocessor::Inpaint => "The start picture with the mask marked, for inpaint models",
            };
            if ui.selectable_label(p.id() == kind.id(), kind.id()).on_hover_text(help).clicked()
                && p.id() != kind.id()
            {
                *p = kind;
            }
        }
    });
    match p {
        Preprocessor::Canny { low, high } => {
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(low).range(0.0..=1000.0).prefix("low "));
                ui.add(egui::DragValue::new(high).range(0.0..=1000.0).prefix("high "));
            });
        }
        Preprocessor::Scribble { threshold } | Preprocessor::Lineart { threshold } => {
            ui.add(egui::Slider::new(threshold, 1..=255).text("Threshold"))
                .on_hover_text("How dark a pixel must be (away from white) to count as a line");
        }
        Preprocessor::Tile { factor } => {
            ui.add(egui::Slider::new(factor, 1.0..=8.0).text("Shrink"))
                .on_hover_text("How many times smaller the softened copy is");
        }
        // The row stays, so the controls below do not jump when the preprocessor changes.
        Preprocessor::None => drop(ui.weak("The picture is the map")),
        Preprocessor::Invert => drop(ui.weak("White becomes black and black white")),
        Preprocessor::Inpaint => drop(ui.weak("The start picture, masked area marked")),
    }
}

/// The map the unit makes now, drawn small; made again when the unit or its picture changes.
fn preview_ui(
    ui: &mut Ui,
    i: usize,
    slot: &ControlSlot,
    canvas: &Canvas,
    (w, h): (u32, u32),
    cached: &mut Option<(String, Result<TextureHandle, String>)>,
) {
    if slot.spec.preprocess == Preprocessor::Inpaint {
        ui.label("Map: the start picture with the mask marked");
        return;
    }
    let source_key = match &slot.source {
        ControlSource::Canvas => format!("canvas {}", canvas.version()),
        ControlSource::File(p) => format!("file {}", p.display()),
    };
    let key = format!("{source_key} {w}x{h} {:?} {:?}", slot.spec.preprocess, slot.spec.resize);
    // While a stroke is being drawn the canvas changes every frame: the map (a full-size resize and
    // preprocess) follows once the stroke ends, so drawing stays smooth.
    let mid_stroke = slot.source == ControlSource::Canvas && canvas.is_stroking() && cached.is_some();
    if !mid_stroke && cached.as_ref().map(|(k, _)| k) != Some(&key) {
        let made = map_picture(slot, canvas, w, h).map(|image| {
            let color =
                egui::ColorImage::from_rgb([image.width() as usize, image.height() as usize], image.as_raw());
            ui.ctx().load_texture(format!("control-map-{i}"), color, egui::TextureOptions::LINEAR)
        });
        *cached = Some((key, made));
    }
    match cached.as_ref().map(|(_, r)| r) {
        Some(Ok(texture)) => {
            let size = texture.size_vec2();
            let scale = 128.0 / size.x.max(size.y).max(1.0);
            ui.add(egui::Image::new(texture).fit_to_exact_size(size * scale))
                .on_hover_text(format!("Unit {i}'s control map"));
        }
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        None => {}
    }
}

fn map_picture(slot: &ControlSlot, canvas: &Canvas, w: u32, h: u32) -> Result<image::RgbImage, String> {
    let picture = match &slot.source {
        ControlSource::Canvas => canvas.picture(),
        ControlSource::File(p) => prepare::read_picture(p, 0).map_err(|e| e.in_studio_words())?,
    };
    prepare::control_map(&slot.spec, &picture, w, h, None).map(|m| m.image).map_err(|e| e.in_studio_words())
}

/// ControlNets in the default folder: single files and diffusers folders.
fn folder_models() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEFAULT_DIR) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join("config.json").is_file()
                || p.extension().is_some_and(|e| {
                    ["safetensors", "pth", "ckpt", "bin"].contains(&e.to_string_lossy().as_ref())
                })
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark stroke across the top and a light yellow one across the bottom of a white canvas.
    fn sketched() -> Canvas {
        let mut c = Canvas::new(64, 64);
        c.size = 6.0;
        c.color = [30, 30, 30];
        c.begin_stroke(8.0, 16.0);
        c.stroke_to(56.0, 16.0);
        c.end_stroke();
        c.color = [250, 230, 60];
        c.begin_stroke(8.0, 48.0);
        c.stroke_to(56.0, 48.0);
        c.end_stroke();
        c
    }

    fn map_of(preprocess: Preprocessor) -> image::RgbImage {
        let slot =
            ControlSlot { spec: ControlSpec { preprocess, ..Default::default() }, ..ControlSlot::new() };
        map_picture(&slot, &sketched(), 64, 64).expect("a map")
    }

    #[test]
    fn canvas_strokes_become_white_on_black_scribbles() {
        let map = map_of(Preprocessor::Scribble { threshold: 64 });
        assert_eq!(map.get_pixel(32, 16).0, [255; 3], "the dark stroke");
        assert_eq!(map.get_pixel(32, 48).0, [255; 3], "the yellow stroke is far from white in blue");
        assert_eq!(map.get_pixel(32, 32).0, [0; 3], "paper is black");
        assert_eq!(map.get_pixel(2, 2).0, [0; 3]);
    }

    #[test]
    fn line_art_keeps_the_dark_lines_of_a_drawing() {
        let map = map_of(Preprocessor::Lineart { threshold: 128 });
        assert_eq!(map.get_pixel(32, 16).0, [255; 3], "the dark line");
        assert_eq!(map.get_pixel(32, 48).0, [0; 3], "a light yellow stroke is no line");
        assert_eq!(map.get_pixel(32, 32).0, [0; 3]);
    }

    #[test]
    fn canvas_units_read_the_canvas_and_file_units_their_file() {
        let mut slot = ControlSlot::new();
        assert_eq!(slot.unit().image, None);
        slot.source = ControlSource::File("sketch.png".into());
        assert_eq!(slot.unit().image, Some(PathBuf::from("sketch.png")));
    }
}
