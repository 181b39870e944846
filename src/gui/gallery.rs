//! The Image tab (live preview while rendering, otherwise the chosen picture with zoom and pan, its
//! parameters, "use these settings" and export) and the Gallery tab (every result, tick to export).

use egui::Ui;

use super::app::EaselApp;
use super::image_view::image_view_ui;
use super::state::{ModelStatus, Tab};
use crate::history::HistoryItem;
use crate::worker::PreviewKind;

/// The Image tab.
pub fn image_tab_ui(app: &mut EaselApp, ui: &mut Ui) {
    let ctx = ui.ctx().clone();
    let running = app.state.running().is_some();
    if let (true, Some(preview)) = (running, &app.state.preview) {
        let tex = app.textures.preview(&ctx, preview, app.state.preview_version);
        let tiny = matches!(&app.state.model, ModelStatus::Ready(m) if matches!(m.preview, PreviewKind::TinyDecoder(_)));
        let kind = if tiny { "tiny decoder" } else { "approximate colours" };
        ui.weak(format!("Live preview ({kind}; the finished picture replaces it)"));
        image_view_ui(ui, &tex, &mut app.view, "Live preview");
        return;
    }
    let Some(item) = app.state.selected.and_then(|id| app.state.history.get(id)).cloned() else {
        ui.centered_and_justified(|ui| ui.label("Type a prompt and press Generate."));
        return;
    };
    item_details_ui(app, ui, &item);
    match app.textures.get(&ctx, &app.state.history, item.id) {
        Some(tex) => {
            image_view_ui(ui, &tex, &mut app.view, "Selected picture");
        }
        None => {
            ui.spinner();
        }
    }
}

fn item_details_ui(app: &mut EaselApp, ui: &mut Ui, item: &HistoryItem) {
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
            app.view.zoom * 100.0
        ));
        if ui.button("Use these settings").clicked() {
            // The saved prompt carries the LoRA tags; the request's stack is the exact one.
            let request = crate::engine::GenerationRequest { prompt: item.saved_prompt.clone(), ..r.clone() };
            app.state.settings.use_request(&request);
            app.state.recheck_loras = true;
            app.state.info(format!("Settings of picture {} restored", item.id));
        }
        if ui.button("Export…").clicked() {
            export_one(app, item);
        }
        if ui.button("Fit").clicked() {
            app.view = Default::default();
        }
    });
    ui.label(egui::RichText::new(&item.saved_prompt).italics());
}

/// The Gallery tab.
pub fn gallery_tab_ui(app: &mut EaselApp, ui: &mut Ui) {
    let ctx = ui.ctx().clone();
    ui.horizontal(|ui| {
        ui.label(format!("{} pictures · {} ticked", app.state.history.items.len(), app.state.marked.len()));
        if ui.add_enabled(!app.state.marked.is_empty(), egui::Button::new("Export ticked…")).clicked() {
            export_marked(app);
        }
    });
    let ids: Vec<u64> = app.state.history.items.iter().rev().map(|i| i.id).collect();
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            for id in ids {
                ui.vertical(|ui| {
                    ui.set_width(136.0);
                    let size = egui::vec2(128.0, 128.0);
                    let clicked = match app.textures.get(&ctx, &app.state.history, id) {
                        Some(tex) => ui
                            .add(egui::Button::image(egui::Image::from_texture(&tex).fit_to_exact_size(size)))
                            // Looked up only while hovered: a per-frame lookup for every
                            // thumbnail would grow with the square of the gallery.
                            .on_hover_ui(|ui| {
                                if let Some(item) = app.state.history.get(id) {
                                    ui.label(&item.saved_prompt);
                                }
                            })
                            .accessible_name(format!("Open picture #{id}"))
                            .clicked(),
                        None => ui.add_sized(size, egui::Spinner::new()).clicked(),
                    };
                    if clicked {
                        app.state.selected = Some(id);
                        app.state.settings.tab = Tab::Image;
                    }
                    let mut ticked = app.state.marked.contains(&id);
                    if ui.checkbox(&mut ticked, format!("#{id}")).changed() {
                        if ticked {
                            app.state.marked.insert(id);
                        } else {
                            app.state.marked.remove(&id);
                        }
                    }
                });
            }
        });
    });
}

fn export_one(app: &mut EaselApp, item: &HistoryItem) {
    let name = item.path.file_name().map_or("easel.png".into(), |n| n.to_string_lossy().to_string());
    let Some(dest) = app.dialogs.save_file("Export picture", &name) else { return };
    match copy_new(&item.path, &dest) {
        Ok(()) => app.state.info(format!("Exported {}", dest.display())),
        Err(e) => app.state.error(e.to_string()),
    }
}

fn export_marked(app: &mut EaselApp) {
    let Some(dir) = app.dialogs.open_folder("Export ticked pictures to") else { return };
    let (mut done, mut skipped) = (0, Vec::new());
    for id in app.state.marked.clone() {
        let Some(item) = app.state.history.get(id) else { continue };
        let name = item.path.file_name().map_or(format!("{id}.png"), |n| n.to_string_lossy().to_string());
        match copy_new(&item.path, &dir.join(&name)) {
            Ok(()) => done += 1,
            Err(e) => skipped.push(e.to_string()),
        }
    }
    if skipped.is_empty() {
        app.state.info(format!("Exported {done} picture(s) to {}", dir.display()));
    } else {
        app.state.error(format!("Exported {done}; not exported: {}", skipped.join("; ")));
    }
}

/// Copies a gallery PNG (metadata included) to `dest`, atomically and never over an existing file.
fn copy_new(src: &std::path::Path, dest: &std::path::Path) -> crate::Result<()> {
    let bytes =
        std::fs::read(src).map_err(|e| crate::Error::io("cannot read the gallery picture", e, src))?;
    crate::export::write_atomically(dest, &bytes, false)
}
