//! The Image tab (live preview while rendering, otherwise the chosen picture with zoom and pan, its
//! parameters, "use these settings" and export) and the Gallery tab (every result, tick to export).

use egui::Ui;

use super::command::{Commands, UiCommand};
use super::image_view::{image_view_ui, ViewTransform};
use super::state::{AppState, ModelStatus, Tab};
use super::textures::Textures;
use crate::history::HistoryItem;
use crate::worker::PreviewKind;

/// The Image tab.
pub fn image_tab_ui(
    ui: &mut Ui,
    state: &AppState,
    view: &mut ViewTransform,
    textures: &mut Textures,
    out: &mut Commands,
) {
    let ctx = ui.ctx().clone();
    let running = state.running().is_some();
    if let (true, Some(preview)) = (running, &state.preview) {
        let tex = textures.preview(&ctx, preview, state.preview_version);
        let tiny =
            matches!(&state.model, ModelStatus::Ready(m) if matches!(m.preview, PreviewKind::TinyDecoder(_)));
        let kind = if tiny { "tiny decoder" } else { "approximate colours" };
        ui.weak(format!("Live preview ({kind}; the finished picture replaces it)"));
        image_view_ui(ui, &tex, view, "Live preview");
        return;
    }
    let Some(item) = state.selected.and_then(|id| state.history.get(id)) else {
        ui.centered_and_justified(|ui| ui.label("Type a prompt and press Generate."));
        return;
    };
    item_details_ui(ui, item, view, out);
    match textures.get(&ctx, &state.history, item.id) {
        Some(tex) => {
            image_view_ui(ui, &tex, view, "Selected picture");
        }
        None => {
            ui.spinner();
        }
    }
}

fn item_details_ui(ui: &mut Ui, item: &HistoryItem, view: &mut ViewTransform, out: &mut Commands) {
    let r = &item.request;
    ui.horizontal_wrapped(|ui| {
        ui.label(format!(
            "{} · seed {} · {} steps {} · CFG {} · {}×{} · {:.1} s · zoom {:.0}%",
            item.model,
            r.seed,
            r.steps,
            r.sampler.id(),
            r.cfg_scale,
            r.width,
            r.height,
            item.total_secs(),
            view.zoom * 100.0
        ));
        if ui.button("Use these settings").clicked() {
            out.push(UiCommand::UseSettingsOf(item.id));
        }
        if ui.button("Export…").clicked() {
            out.push(UiCommand::ExportPicture(item.id));
        }
        if ui.button("Fit").clicked() {
            *view = ViewTransform::default();
        }
    });
    ui.label(egui::RichText::new(&item.saved_prompt).italics());
}

/// The Gallery tab.
pub fn gallery_tab_ui(ui: &mut Ui, state: &mut AppState, textures: &mut Textures, out: &mut Commands) {
    let ctx = ui.ctx().clone();
    ui.horizontal(|ui| {
        ui.label(format!("{} pictures · {} ticked", state.history.items.len(), state.marked.len()));
        if ui.add_enabled(!state.marked.is_empty(), egui::Button::new("Export ticked…")).clicked() {
            out.push(UiCommand::ExportMarked);
        }
    });
    let ids: Vec<u64> = state.history.items.iter().rev().map(|i| i.id).collect();
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            for id in ids {
                ui.vertical(|ui| {
                    ui.set_width(136.0);
                    let size = egui::vec2(128.0, 128.0);
                    let clicked = match textures.get(&ctx, &state.history, id) {
                        Some(tex) => ui
                            .add(egui::Button::image(egui::Image::from_texture(&tex).fit_to_exact_size(size)))
                            // Looked up only while hovered: a per-frame lookup for every
                            // thumbnail would grow with the square of the gallery.
                            .on_hover_ui(|ui| {
                                if let Some(item) = state.history.get(id) {
                                    ui.label(&item.saved_prompt);
                                }
                            })
                            .accessible_name(format!("Open picture #{id}"))
                            .clicked(),
                        None => ui.add_sized(size, egui::Spinner::new()).clicked(),
                    };
                    if clicked {
                        state.selected = Some(id);
                        state.settings.tab = Tab::Image;
                    }
                    let mut ticked = state.marked.contains(&id);
                    if ui.checkbox(&mut ticked, format!("#{id}")).changed() {
                        if ticked {
                            state.marked.insert(id);
                        } else {
                            state.marked.remove(&id);
                        }
                    }
                });
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, pushed, session};
    use super::*;

    #[test]
    fn a_picture_offers_its_settings_and_its_export() {
        let (_dir, mut state) = session();
        state.history.items.push(HistoryItem {
            id: 3,
            path: "missing.png".into(),
            request: crate::engine::GenerationRequest::default(),
            saved_prompt: "a cat".into(),
            model: "tiny".into(),
            created_unix: 0,
            timings: Default::default(),
        });
        state.selected = Some(3);
        // The file is missing, so the picture's spinner keeps the frame busy: step, not settle.
        let mut h = harness(state, ViewTransform::default(), |ui, state, view, out| {
            image_tab_ui(ui, state, view, &mut Textures::default(), out)
        });
        h.run_steps(2);
        h.get_by_label("Use these settings").click();
        h.run_steps(2);
        assert_eq!(pushed(&mut h), [UiCommand::UseSettingsOf(3)]);
        h.get_by_label("Export…").click();
        h.run_steps(2);
        assert_eq!(pushed(&mut h), [UiCommand::ExportPicture(3)]);
    }
}
