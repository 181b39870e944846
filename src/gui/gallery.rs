//! The Image tab (live preview while rendering, otherwise the chosen picture with zoom and pan, its
//! parameters, "use these settings" and export) and the Gallery tab (every result, tick to export).

use egui::Ui;

use super::command::{Commands, UiCommand};
use super::image_view::{image_view_ui, ViewTransform};
use super::state::{AppState, ModelStatus, Tab};
use super::textures::Textures;
use crate::history::HistoryItem;
use crate::worker::PreviewKind;

/// The Image tab's own state.
#[derive(Debug, Default)]
pub struct ImageView {
    /// Zoom and pan.
    pub transform: ViewTransform,
    /// Show the chosen picture instead of the live preview while a render runs.
    pub hide_preview: bool,
}

/// The Image tab.
pub fn image_tab_ui(
    ui: &mut Ui,
    state: &AppState,
    view: &mut ImageView,
    textures: &mut Textures,
    out: &mut Commands,
) {
    let ctx = ui.ctx().clone();
    let running = state.running().is_some();
    if let (true, Some(preview)) = (running, &state.preview) {
        let tiny =
            matches!(&state.model, ModelStatus::Ready(m) if matches!(m.preview, PreviewKind::TinyDecoder(_)));
        let kind = if tiny { "tiny decoder" } else { "approximate colours" };
        ui.horizontal(|ui| {
            ui.checkbox(&mut view.hide_preview, "Show the chosen picture")
                .on_hover_text("Look at (or export) an earlier picture while this one renders");
            if !view.hide_preview {
                ui.weak(format!("Live preview ({kind}; the finished picture replaces it)"));
            }
        });
        if !view.hide_preview {
            let tex = textures.preview(&ctx, preview, state.preview_version);
            image_view_ui(ui, &tex, &mut view.transform, "Live preview");
            return;
        }
    }
    let view = &mut view.transform;
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

/// The ways the request departs from Easel's defaults towards A1111's, for the caption.
fn a1111_caption(r: &crate::engine::GenerationRequest) -> String {
    use crate::engine::{prompt::Emphasis, rng::NoiseSource, samplers::SamplerImpl};
    let mut parts = Vec::new();
    if r.sampler_impl == SamplerImpl::A1111 {
        parts.push("as A1111".to_string());
    }
    if r.rng == NoiseSource::Gpu {
        parts.push("GPU noise".into());
    }
    if r.ensd != 0 {
        parts.push(format!("ENSD {}", r.ensd));
    }
    if r.clip_skip != 1 {
        parts.push(format!("clip skip {}", r.clip_skip));
    }
    if r.emphasis != Emphasis::Original {
        parts.push(format!("emphasis {}", r.emphasis.a1111_name()));
    }
    parts.into_iter().map(|p| format!(" · {p}")).collect()
}

fn item_details_ui(ui: &mut Ui, item: &HistoryItem, view: &mut ViewTransform, out: &mut Commands) {
    let r = &item.request;
    ui.horizontal_wrapped(|ui| {
        ui.label(format!(
            "{} · seed {} · {} steps {}{}{} · CFG {} · {}×{} · {:.1} s · zoom {:.0}%",
            item.model,
            r.seed,
            r.steps,
            super::controls::sampler_name(r.sampler),
            r.spacing.map_or(String::new(), |s| format!(" ({s})")),
            a1111_caption(r),
            r.cfg_scale,
            r.width,
            r.height,
            item.total_secs(),
            view.pixel_percent()
        ));
        if ui.button("Use these settings").clicked() {
            out.push(UiCommand::UseSettingsOf(item.id));
        }
        if ui.button("Export…").clicked() {
            out.push(UiCommand::ExportPicture(item.id));
        }
        if ui.button("Fit").clicked() {
            *view = ViewTransform { fit: view.fit, ..Default::default() };
        }
        if ui.button("1:1").on_hover_text("One picture pixel per screen pixel").clicked() {
            view.actual_size();
        }
    });
    ui.label(egui::RichText::new(&item.saved_prompt).italics());
}

/// Width of one gallery cell: a 128 px thumbnail and its margin.
const CELL_WIDTH: f32 = 144.0;

/// "1 picture", "2 pictures".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The Gallery tab: every picture, newest first, in rows that wrap to the tab's width and scroll.
pub fn gallery_tab_ui(ui: &mut Ui, state: &mut AppState, textures: &mut Textures, out: &mut Commands) {
    let ctx = ui.ctx().clone();
    ui.horizontal(|ui| {
        ui.label(format!("{} · {} ticked", count(state.history.items.len(), "picture"), state.marked.len()));
        if ui.add_enabled(!state.marked.is_empty(), egui::Button::new("Export ticked…")).clicked() {
            out.push(UiCommand::ExportMarked);
        }
    });
    let ids: Vec<u64> = state.history.items.iter().rev().map(|i| i.id).collect();
    let columns = ((ui.available_width() / CELL_WIDTH).floor() as usize).max(1);
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        egui::Grid::new("gallery").spacing([8.0, 8.0]).show(ui, |ui| {
            for row in ids.chunks(columns) {
                for &id in row {
                    ui.vertical(|ui| cell_ui(ui, &ctx, state, textures, out, id));
                }
                ui.end_row();
            }
        });
    });
}

/// One picture of the gallery: its thumbnail (click to open, right-click for more) and its tick.
fn cell_ui(
    ui: &mut Ui,
    ctx: &egui::Context,
    state: &mut AppState,
    textures: &mut Textures,
    out: &mut Commands,
    id: u64,
) {
    let size = egui::vec2(128.0, 128.0);
    let thumbnail = match textures.get(ctx, &state.history, id) {
        Some(tex) => ui.add(egui::Button::image(egui::Image::from_texture(&tex).fit_to_exact_size(size))),
        None if textures.failed(id) => ui
            .add_sized(size, egui::Button::new("file missing"))
            .on_hover_text("The picture's file was moved or deleted"),
        None => ui.add_sized(size, egui::Spinner::new()),
    };
    // Looked up only while hovered: a per-frame lookup for every thumbnail would grow with the
    // square of the gallery.
    let thumbnail = thumbnail
        .on_hover_ui(|ui| {
            if let Some(item) = state.history.get(id) {
                ui.label(&item.saved_prompt);
            }
        })
        .accessible_name(format!("Open picture #{id}"));
    if thumbnail.clicked() {
        state.selected = Some(id);
        state.settings.tab = Tab::Image;
    }
    thumbnail.context_menu(|ui| {
        if ui.button("Use these settings").clicked() {
            out.push(UiCommand::UseSettingsOf(id));
        }
        if ui.button("Export…").clicked() {
            out.push(UiCommand::ExportPicture(id));
        }
        if ui.button("Compare as A").clicked() {
            state.compare.0 = Some(id);
        }
        if ui.button("Compare as B").clicked() {
            state.compare.1 = Some(id);
        }
        if ui.button("Show the file").clicked() {
            out.push(UiCommand::RevealPicture(id));
        }
        ui.separator();
        if ui.button("Delete").on_hover_text("Moves the file to the gallery's trash folder").clicked() {
            out.push(UiCommand::DeletePicture(id));
        }
    });
    let mut ticked = state.marked.contains(&id);
    if ui.checkbox(&mut ticked, format!("#{id}")).changed() {
        if ticked {
            state.marked.insert(id);
        } else {
            state.marked.remove(&id);
        }
    }
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
        let mut h = harness(state, ImageView::default(), |ui, state, view, out| {
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

#[cfg(test)]
mod grid_tests {
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, pushed, session};
    use super::*;

    #[test]
    fn thirty_pictures_wrap_into_rows_that_reach_the_oldest() {
        let (dir, mut state) = session();
        let png = dir.path().join("p.png");
        image::RgbImage::new(8, 8).save(&png).expect("a picture");
        for id in 1..=30 {
            state.history.items.push(HistoryItem {
                id,
                path: png.clone(),
                request: crate::engine::GenerationRequest::default(),
                saved_prompt: format!("picture {id}"),
                model: "tiny".into(),
                created_unix: 0,
                timings: Default::default(),
            });
        }
        let mut h = harness(state, Textures::default(), |ui, state, textures, out| {
            gallery_tab_ui(ui, state, textures, out)
        });
        h.run_steps(20);
        assert!(h.query_by_label("30 pictures · 0 ticked").is_some());
        let oldest = h.get_by_label("Open picture #1").rect();
        let newest = h.get_by_label("Open picture #30").rect();
        assert!(oldest.left() < 900.0, "the rows wrap inside the tab: #1 at {oldest:?}");
        assert!(oldest.top() > newest.bottom(), "the oldest is rows below the newest");
        h.get_by_label("Open picture #1").scroll_to_me();
        h.run_steps(3);
        let scrolled = h.get_by_label("Open picture #1").rect();
        assert!(scrolled.bottom() <= 700.0, "scrolled into view: {scrolled:?}");
        assert!(pushed(&mut h).is_empty());
    }

    #[test]
    fn counts_read_as_sentences() {
        assert_eq!(count(1, "picture"), "1 picture");
        assert_eq!(count(0, "picture"), "0 pictures");
    }
}
