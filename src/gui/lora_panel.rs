//! The LoRA stack panel (enable, weight with a numeric field, separate UNet / text-encoder weights,
//! compatibility, reorder, remove) and the folder browser that adds adapters by title and
//! thumbnail.

use std::collections::HashSet;
use std::path::PathBuf;

use egui::{Context, Ui};

use super::command::{Commands, UiCommand};
use super::state::{AppState, LoraSlot};
use super::textures::Textures;

/// The LoRA folder window's own state.
#[derive(Debug, Default)]
pub struct LoraBrowser {
    /// Whether the window is shown.
    pub open: bool,
    /// The folder last listed and the adapters found in it (listed when the folder changes,
    /// not every frame).
    listed: Option<(String, Vec<PathBuf>)>,
    /// Files the worker was asked to read, so each is asked for once.
    requested: HashSet<PathBuf>,
}

/// The stack in the left panel.
pub fn lora_stack_ui(ui: &mut Ui, state: &mut AppState, browser: &mut LoraBrowser, out: &mut Commands) {
    ui.horizontal(|ui| {
        ui.strong("LoRA stack");
        if ui.button("Add file…").on_hover_text("A LoRA, LoCon, LoHa or LoKr .safetensors").clicked() {
            out.push(UiCommand::ChooseLoraFile);
        }
        if ui.button("Browse…").on_hover_text("Adapters in your LoRA folder").clicked() {
            browser.open = true;
        }
    });
    let mut remove = None;
    let mut swap = None;
    let count = state.settings.loras.len();
    for (i, slot) in state.settings.loras.iter_mut().enumerate() {
        let info = state.lora_info.get(&slot.path);
        let title = info.map_or(slot.name.clone(), |i| i.title.clone());
        ui.push_id(i, |ui| {
            ui.horizontal(|ui| {
                ui.checkbox(&mut slot.enabled, &title).on_hover_text(slot.path.display().to_string());
                if ui.add_enabled(i > 0, egui::Button::new("Up").small()).on_hover_text("Move up").clicked() {
                    swap = Some((i - 1, i));
                }
                if ui
                    .add_enabled(i + 1 < count, egui::Button::new("Down").small())
                    .on_hover_text("Move down")
                    .clicked()
                {
                    swap = Some((i, i + 1));
                }
                if ui.small_button("×").on_hover_text(format!("Remove {}", slot.name)).clicked() {
                    remove = Some(i);
                }
            });
            ui.add_enabled_ui(slot.enabled, |ui| weights_ui(ui, slot));
            match info.and_then(|i| i.compatibility.as_ref()) {
                Some(Ok(summary)) => {
                    let text = state.lora_reports.get(&slot.name).map_or(summary.clone(), |r| r.summary());
                    ui.weak(format!("Fits: {text}"));
                }
                Some(Err(why)) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("Does not fit: {why}"));
                }
                None if info.is_none() => {
                    ui.weak("reading…");
                }
                None => {
                    ui.weak("checked when a model is loaded");
                }
            }
        });
    }
    if let Some((a, b)) = swap {
        state.settings.loras.swap(a, b);
    }
    if let Some(i) = remove {
        state.settings.loras.remove(i);
    }
}

/// The slider's span: what most adapters are used at; typed values may go beyond it.
const SLIDER_RANGE: std::ops::RangeInclusive<f64> = -1.0..=2.0;

/// A weight slider 180 px wide, its number field dragged in hundredths; a typed value is taken as
/// typed (no snapping to steps), then kept to two decimals.
fn weight_slider<'a>(weight: &'a mut f64, text: String) -> egui::Slider<'a> {
    egui::Slider::new(weight, SLIDER_RANGE)
        .clamping(egui::SliderClamping::Never)
        .smart_aim(true)
        .drag_value_speed(0.01)
        .max_decimals(2)
        .text(text)
}

/// A weight as A1111 writes it: two decimals, so a slider's 0.6000000000000001 is 0.6 in the
/// prompt, the metadata and every label.
fn rounded(w: f64) -> f64 {
    (w * 100.0).round() / 100.0
}

fn weights_ui(ui: &mut Ui, slot: &mut LoraSlot) {
    ui.spacing_mut().slider_width = 180.0;
    if slot.separate {
        ui.add(weight_slider(&mut slot.unet_weight, format!("{} UNet", slot.name)));
        ui.add(weight_slider(&mut slot.text_weight, format!("{} text", slot.name)));
    } else {
        ui.add(weight_slider(&mut slot.weight, format!("{} weight", slot.name)));
    }
    let was = slot.separate;
    ui.checkbox(&mut slot.separate, "Separate UNet / text weights");
    if slot.separate && !was {
        slot.unet_weight = slot.weight;
        slot.text_weight = slot.weight;
    }
    // Slider text fields accept any number; keep what the engine accepts.
    let limit = crate::engine::request::MAX_LORA_WEIGHT;
    for w in [&mut slot.weight, &mut slot.unet_weight, &mut slot.text_weight] {
        *w = rounded(w.clamp(-limit, limit));
    }
}

/// The adapters in the LoRA folder, as a window of cards.
pub fn lora_browser_window(
    ctx: &Context,
    state: &mut AppState,
    browser: &mut LoraBrowser,
    textures: &mut Textures,
    out: &mut Commands,
) {
    let mut open = browser.open;
    egui::Window::new("LoRA folder").open(&mut open).default_size([420.0, 480.0]).show(ctx, |ui| {
        let typing = ui
            .horizontal(|ui| {
                let label = ui.label("Folder");
                let field = ui
                    .add(egui::TextEdit::singleline(&mut state.settings.lora_dir).desired_width(220.0))
                    .labelled_by(label.id);
                if ui.button("Choose…").clicked() {
                    out.push(UiCommand::ChooseLoraFolder);
                }
                field.has_focus()
            })
            .inner;
        // A folder is listed once its path is committed (the field left), not at every keystroke
        // of a half-typed path.
        let dir = &state.settings.lora_dir;
        if !typing && browser.listed.as_ref().is_none_or(|(d, _)| d != dir) {
            browser.listed = Some((dir.clone(), adapter_files(&PathBuf::from(dir))));
        }
        let files = browser.listed.as_ref().map(|(_, f)| f.clone()).unwrap_or_default();
        let unread: Vec<PathBuf> = files
            .iter()
            .filter(|f| {
                !state.lora_info.contains_key(*f)
                    && !state.lora_unreadable.contains_key(*f)
                    && browser.requested.insert((*f).clone())
            })
            .cloned()
            .collect();
        if !unread.is_empty() {
            out.push(UiCommand::InspectLoras(unread));
        }
        if files.is_empty() {
            ui.label("No .safetensors adapters in this folder.");
        }
        egui::ScrollArea::vertical().show(ui, |ui| {
            for path in files {
                ui.horizontal(|ui| {
                    match state.lora_info.get(&path) {
                        Some(info) => {
                            if let Some(thumb) = &info.thumbnail {
                                let tex = textures.thumbnail(ui.ctx(), &path, thumb);
                                ui.add(egui::Image::from_texture(&tex).max_size(egui::vec2(48.0, 48.0)));
                            }
                            ui.vertical(|ui| {
                                ui.strong(&info.title);
                                let mut line = info.name.clone();
                                if let Some(r) = info.rank {
                                    line.push_str(&format!(" · rank {r}"));
                                }
                                if !info.trigger_words.is_empty() {
                                    line.push_str(&format!(" · {}", info.trigger_words.join(", ")));
                                }
                                ui.weak(line);
                            });
                        }
                        None => {
                            ui.vertical(|ui| {
                                ui.label(
                                    path.file_name()
                                        .map_or(String::new(), |n| n.to_string_lossy().to_string()),
                                );
                                if let Some(why) = state.lora_unreadable.get(&path) {
                                    ui.colored_label(
                                        ui.visuals().error_fg_color,
                                        format!("Unreadable: {why}"),
                                    )
                                    .on_hover_text(why);
                                }
                            });
                        }
                    }
                    if ui.button("Add").clicked() {
                        out.push(UiCommand::AddLora(path.clone()));
                    }
                });
            }
        });
    });
    browser.open = open;
}

/// `.safetensors` files in `dir` and its direct subfolders.
fn adapter_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Ok(sub) = std::fs::read_dir(&p) {
                out.extend(sub.flatten().map(|e| e.path()).filter(|p| is_adapter(p)));
            }
        } else if is_adapter(&p) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn is_adapter(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

#[cfg(test)]
mod tests {
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, pushed, session};
    use super::*;

    #[test]
    fn weights_are_kept_to_two_decimals_as_a1111_writes_them() {
        let (_dir, mut state) = session();
        let slot = LoraSlot { weight: 0.6000000000000001, ..LoraSlot::new("ink.safetensors".into()) };
        state.settings.loras.push(slot);
        let mut h = harness(state, LoraBrowser::default(), lora_stack_ui);
        h.run();
        let settings = &h.state().state.settings;
        assert_eq!(settings.loras[0].weight, 0.6);
        assert_eq!(settings.saved_prompt(), " <lora:ink:0.6>");
    }

    #[test]
    fn the_browser_lists_its_folder_and_asks_for_each_file_once() {
        let (dir, mut state) = session();
        let loras = dir.path().join("loras");
        std::fs::create_dir_all(loras.join("styles")).expect("folders");
        std::fs::write(loras.join("ink.safetensors"), b"x").expect("file");
        std::fs::write(loras.join("styles").join("oil.safetensors"), b"x").expect("file");
        std::fs::write(loras.join("notes.txt"), b"x").expect("file");
        state.settings.lora_dir = loras.display().to_string();
        let browser = LoraBrowser { open: true, ..Default::default() };
        let mut h = harness(state, browser, |ui, state, browser, out| {
            lora_browser_window(&ui.ctx().clone(), state, browser, &mut Textures::default(), out)
        });
        h.run();
        let first = pushed(&mut h);
        let wanted = vec![loras.join("ink.safetensors"), loras.join("styles").join("oil.safetensors")];
        assert_eq!(first, [UiCommand::InspectLoras(wanted)]);
        h.get_all_by_label("Add").next().expect("an Add button per file").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::AddLora(loras.join("ink.safetensors"))], "asked once");
    }
}
