//! The Compare tab: A/B of two gallery pictures (a wipe slider, or side by side with zoom and pan
//! in step) and the LoRA × weight × seed grid, rendered with the same seeds in every row so only
//! the adapter changes, labelled, and exportable as one PNG.

use egui::{Color32, Rect, Ui};

use super::app::{CompareMode, EaselApp};
use super::image_view::ViewTransform;
use super::state::{Grid, JobKind, ModelStatus};
use crate::engine::LoraSpec;
use crate::worker::{Command, GenerateJob};

/// The Compare tab.
pub fn compare_tab_ui(app: &mut EaselApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        ui.selectable_value(&mut app.compare_mode, CompareMode::Wipe, "A/B wipe");
        ui.selectable_value(&mut app.compare_mode, CompareMode::SideBySide, "Side by side");
        ui.selectable_value(&mut app.compare_mode, CompareMode::Grid, "LoRA grid");
    });
    ui.separator();
    match app.compare_mode {
        CompareMode::Grid => grid_ui(app, ui),
        mode => ab_ui(app, ui, mode),
    }
}

fn pick_ui(app: &mut EaselApp, ui: &mut Ui, which: &str, slot: usize) {
    let current = if slot == 0 { app.state.compare.0 } else { app.state.compare.1 };
    let text = current.map_or("choose…".to_string(), |id| format!("#{id}"));
    let mut chosen = current;
    egui::ComboBox::from_label(which).selected_text(text).show_ui(ui, |ui| {
        for item in app.state.history.items.iter().rev().take(200) {
            let label: String =
                format!("#{} {}", item.id, item.saved_prompt.chars().take(40).collect::<String>());
            ui.selectable_value(&mut chosen, Some(item.id), label);
        }
    });
    if slot == 0 {
        app.state.compare.0 = chosen;
    } else {
        app.state.compare.1 = chosen;
    }
}

fn ab_ui(app: &mut EaselApp, ui: &mut Ui, mode: CompareMode) {
    // Default pair: the two newest pictures.
    let newest: Vec<u64> = app.state.history.items.iter().rev().take(2).map(|i| i.id).collect();
    if app.state.compare.0.is_none() {
        app.state.compare.0 = newest.get(1).copied();
    }
    if app.state.compare.1.is_none() {
        app.state.compare.1 = newest.first().copied();
    }
    ui.horizontal(|ui| {
        pick_ui(app, ui, "A", 0);
        pick_ui(app, ui, "B", 1);
        if mode == CompareMode::Wipe {
            ui.add(egui::Slider::new(&mut app.wipe, 0.0..=1.0).show_value(false).text("Wipe"));
        }
    });
    let ctx = ui.ctx().clone();
    let (Some(a), Some(b)) = (app.state.compare.0, app.state.compare.1) else {
        ui.label("Make at least two pictures to compare them.");
        return;
    };
    let (Some(ta), Some(tb)) =
        (app.textures.get(&ctx, &app.state.history, a), app.textures.get(&ctx, &app.state.history, b))
    else {
        ui.spinner();
        return;
    };
    match mode {
        CompareMode::Wipe => {
            let size = ui.available_size();
            let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click_and_drag());
            app.compare_view.interact(ui, &response);
            let painter = ui.painter_at(rect);
            painter.rect_filled(rect, 0.0, Color32::from_gray(24));
            let pic = app.compare_view.picture_rect(rect, ta.size_vec2());
            let uv = Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            painter.image(ta.id(), pic, uv, Color32::WHITE);
            // B shows right of the wipe line.
            let split = pic.left() + pic.width() * app.wipe;
            let right = Rect::from_min_max(egui::pos2(split, pic.top()), pic.max);
            let uv_right = Rect::from_min_max(egui::pos2(app.wipe, 0.0), egui::pos2(1.0, 1.0));
            painter.image(tb.id(), right, uv_right, Color32::WHITE);
            painter.vline(split, pic.y_range(), egui::Stroke::new(2.0, Color32::WHITE));
            response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "A/B wipe"));
        }
        _ => {
            ui.columns(2, |cols| {
                let mut shared: ViewTransform = app.compare_view;
                super::image_view::image_view_ui(&mut cols[0], &ta, &mut shared, "Picture A");
                super::image_view::image_view_ui(&mut cols[1], &tb, &mut shared, "Picture B");
                app.compare_view = shared;
            });
        }
    }
}

/// Parses "0, 0.25, 1" into weights.
pub fn parse_weights(text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>().map_err(|_| format!("{s:?} is not a weight; write numbers separated by commas"))
        })
        .collect()
}

fn grid_ui(app: &mut EaselApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        let label = ui.label("Weights");
        ui.add(egui::TextEdit::singleline(&mut app.state.settings.grid_weights).desired_width(160.0))
            .labelled_by(label.id);
        let label = ui.label("Seeds");
        ui.add(egui::DragValue::new(&mut app.state.settings.grid_seeds).range(1..=8)).labelled_by(label.id);
        let ready = matches!(app.state.model, ModelStatus::Ready(_));
        if ui.add_enabled(ready, egui::Button::new("Render grid")).clicked() {
            queue_grid(app);
        }
        let complete = !app.state.grid.rows.is_empty()
            && app.state.grid.cells.len() == app.state.grid.rows.len() * app.state.grid.cols.len();
        if ui.add_enabled(complete, egui::Button::new("Export grid…")).clicked() {
            export_grid(app);
        }
    });
    let grid = app.state.grid.clone();
    if grid.rows.is_empty() {
        ui.label("Each enabled adapter of the stack becomes rows at the weights above (weight 0 is the base model); columns are seeds.");
        return;
    }
    let ctx = ui.ctx().clone();
    egui::ScrollArea::both().show(ui, |ui| {
        egui::Grid::new("lora-grid").spacing([4.0, 4.0]).show(ui, |ui| {
            ui.label("");
            for c in &grid.cols {
                ui.strong(c);
            }
            ui.end_row();
            for (r, row) in grid.rows.iter().enumerate() {
                ui.strong(row);
                for c in 0..grid.cols.len() {
                    let size = egui::vec2(160.0, 160.0);
                    match grid
                        .cells
                        .get(&(r, c))
                        .and_then(|id| app.textures.get(&ctx, &app.state.history, *id))
                    {
                        Some(tex) => {
                            ui.add(egui::Image::from_texture(&tex).fit_to_exact_size(size));
                        }
                        None => {
                            ui.add_sized(size, egui::Spinner::new());
                        }
                    }
                }
                ui.end_row();
            }
        });
    });
}

fn queue_grid(app: &mut EaselApp) {
    let weights = match parse_weights(&app.state.settings.grid_weights) {
        Ok(w) if !w.is_empty() => w,
        Ok(_) => return app.state.error("Give at least one weight for the grid."),
        Err(e) => return app.state.error(e),
    };
    let adapters: Vec<LoraSpec> =
        app.state.settings.loras.iter().filter(|s| s.enabled).map(|s| s.spec()).collect();
    if adapters.is_empty() {
        return app.state.error("Add and enable at least one LoRA to make a grid.");
    }
    let base = app.state.settings.request();
    let seeds: Vec<u64> =
        (0..app.state.settings.grid_seeds as u64).map(|k| base.seed.wrapping_add(k)).collect();
    let mut grid = Grid { cols: seeds.iter().map(|s| format!("seed {s}")).collect(), ..Default::default() };
    let mut cells = Vec::new();
    for adapter in &adapters {
        for &w in &weights {
            let row = grid.rows.len();
            grid.rows.push(format!("{} × {w}", adapter.name));
            for (col, &seed) in seeds.iter().enumerate() {
                let loras = if w == 0.0 {
                    Vec::new()
                } else {
                    vec![LoraSpec { unet_weight: w, text_weight: w, ..adapter.clone() }]
                };
                cells.push((
                    row,
                    col,
                    crate::engine::GenerationRequest { seed, batch: 1, loras, ..base.clone() },
                ));
            }
        }
    }
    app.state.grid = grid;
    let output_dir = app.state.paths.gallery();
    for (row, col, request) in cells {
        let saved_prompt = crate::engine::lora::tags::prompt_with_tags(&request.prompt, &request.loras);
        let label = format!("grid {} / seed {}", app.state.grid.rows[row], request.seed);
        let (id, cancel) = app.state.enqueue(label, 1, JobKind::GridCell { row, col });
        app.send(Command::Generate(Box::new(GenerateJob {
            id,
            request,
            saved_prompt,
            init_image: None,
            mask: None,
            cancel,
            output_dir: output_dir.clone(),
        })));
    }
}

fn export_grid(app: &mut EaselApp) {
    let Some(dest) = app.dialogs.save_file("Export grid", "lora-grid.png") else { return };
    let grid = &app.state.grid;
    let mut pictures = Vec::new();
    for r in 0..grid.rows.len() {
        let mut row = Vec::new();
        for c in 0..grid.cols.len() {
            let Some(item) = grid.cells.get(&(r, c)).and_then(|id| app.state.history.get(*id)) else {
                return;
            };
            match image::open(&item.path) {
                Ok(img) => row.push(img.to_rgb8()),
                Err(e) => return app.state.error(format!("cannot read {}: {e}", item.path.display())),
            }
        }
        pictures.push(row);
    }
    let composed = super::grid_image::compose(&grid.rows, &grid.cols, &pictures);
    let request = app.state.settings.request();
    let text = format!(
        "LoRA grid: {}\nrows: {}\ncolumns: {}",
        request.prompt,
        grid.rows.join("; "),
        grid.cols.join("; ")
    );
    match crate::export::png::save_png(&dest, &composed, &[("Description".into(), text)], false) {
        Ok(()) => app.state.info(format!("Exported the grid to {}", dest.display())),
        Err(e) => app.state.error(e.to_string()),
    }
}
