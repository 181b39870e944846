//! The Compare tab: A/B of two gallery pictures (a wipe slider, or side by side with zoom and pan
//! in step) and the LoRA × weight × seed grid, rendered with the same seeds in every row so only
//! the adapter changes, labelled, and exportable as one PNG.

use egui::{Color32, Rect, Ui};

use super::command::{Commands, UiCommand};
use super::image_view::ViewTransform;
use super::state::{AppState, Grid, ModelStatus};
use super::textures::Textures;
use crate::engine::{GenerationRequest, LoraSpec};

/// A/B compare modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareMode {
    /// One picture over the other, split by a movable line.
    #[default]
    Wipe,
    /// Both, zoomed and panned together.
    SideBySide,
    /// The LoRA × weight × seed grid.
    Grid,
}

/// The Compare tab's own state.
#[derive(Debug)]
pub struct CompareView {
    /// The mode shown.
    pub mode: CompareMode,
    /// Where the wipe line is across the picture, 0 (all B) to 1 (all A).
    pub wipe: f32,
    /// Zoom and pan of the wipe view.
    pub wipe_view: ViewTransform,
    /// Zoom and pan of side by side, shared by both pictures (each mode keeps its own).
    pub side_view: ViewTransform,
}

impl Default for CompareView {
    fn default() -> Self {
        Self {
            mode: CompareMode::Wipe,
            wipe: 0.5,
            wipe_view: ViewTransform::default(),
            side_view: ViewTransform::default(),
        }
    }
}

/// The Compare tab.
pub fn compare_tab_ui(
    ui: &mut Ui,
    state: &mut AppState,
    view: &mut CompareView,
    textures: &mut Textures,
    out: &mut Commands,
) {
    ui.horizontal(|ui| {
        ui.selectable_value(&mut view.mode, CompareMode::Wipe, "A/B wipe");
        ui.selectable_value(&mut view.mode, CompareMode::SideBySide, "Side by side");
        ui.selectable_value(&mut view.mode, CompareMode::Grid, "LoRA grid");
    });
    ui.separator();
    match view.mode {
        CompareMode::Grid => grid_ui(ui, state, textures, out),
        _ => ab_ui(ui, state, view, textures),
    }
}

fn pick_ui(ui: &mut Ui, state: &mut AppState, which: &str, slot: usize) {
    let current = if slot == 0 { state.compare.0 } else { state.compare.1 };
    let text = current.map_or("choose…".to_string(), |id| format!("#{id}"));
    let mut chosen = current;
    egui::ComboBox::from_label(which).selected_text(text).show_ui(ui, |ui| {
        for item in state.history.items.iter().rev().take(200) {
            let label: String =
                format!("#{} {}", item.id, item.saved_prompt.chars().take(40).collect::<String>());
            ui.selectable_value(&mut chosen, Some(item.id), label).on_hover_text(&item.saved_prompt);
        }
    });
    if slot == 0 {
        state.compare.0 = chosen;
    } else {
        state.compare.1 = chosen;
    }
}

fn ab_ui(ui: &mut Ui, state: &mut AppState, view: &mut CompareView, textures: &mut Textures) {
    // Default pair: the two newest pictures.
    let newest: Vec<u64> = state.history.items.iter().rev().take(2).map(|i| i.id).collect();
    if state.compare.0.is_none() {
        state.compare.0 = newest.get(1).copied();
    }
    if state.compare.1.is_none() {
        state.compare.1 = newest.first().copied();
    }
    ui.horizontal(|ui| {
        pick_ui(ui, state, "A", 0);
        pick_ui(ui, state, "B", 1);
        if view.mode == CompareMode::Wipe {
            ui.add(egui::Slider::new(&mut view.wipe, 0.0..=1.0).show_value(false).text("Wipe"));
        }
        if ui.button("Fit").on_hover_text("Back to the whole picture (or double-click it)").clicked() {
            view.wipe_view = ViewTransform::default();
            view.side_view = ViewTransform::default();
        }
    });
    let ctx = ui.ctx().clone();
    let (Some(a), Some(b)) = (state.compare.0, state.compare.1) else {
        ui.label("Make at least two pictures to compare them.");
        return;
    };
    let (Some(ta), Some(tb)) = (textures.get(&ctx, &state.history, a), textures.get(&ctx, &state.history, b))
    else {
        ui.spinner();
        return;
    };
    match view.mode {
        CompareMode::Wipe => {
            ui.weak("Drag to move the line; drag with the right button to pan, scroll to zoom.");
            let size = ui.available_size();
            let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click_and_drag());
            view.wipe_view.interact_zoom(ui, &response);
            if response.dragged_by(egui::PointerButton::Secondary)
                || response.dragged_by(egui::PointerButton::Middle)
            {
                view.wipe_view.pan += response.drag_delta();
            }
            let painter = ui.painter_at(rect);
            painter.rect_filled(rect, 0.0, Color32::from_gray(24));
            let pic = view.wipe_view.picture_rect(rect, ta.size_vec2());
            if let (true, Some(pos)) = (response.is_pointer_button_down_on(), response.interact_pointer_pos())
            {
                if ui.input(|i| i.pointer.primary_down()) && pic.width() > 0.0 {
                    view.wipe = ((pos.x - pic.left()) / pic.width()).clamp(0.0, 1.0);
                }
            }
            let uv = Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            painter.image(ta.id(), pic, uv, Color32::WHITE);
            // B shows right of the wipe line.
            let split = pic.left() + pic.width() * view.wipe;
            let right = Rect::from_min_max(egui::pos2(split, pic.top()), pic.max);
            let uv_right = Rect::from_min_max(egui::pos2(view.wipe, 0.0), egui::pos2(1.0, 1.0));
            painter.image(tb.id(), right, uv_right, Color32::WHITE);
            painter.vline(split, pic.y_range(), egui::Stroke::new(2.0, Color32::WHITE));
            let top = pic.top().max(rect.top()) + 4.0;
            caption(
                &painter,
                egui::pos2(pic.left().max(rect.left()) + 4.0, top),
                egui::Align2::LEFT_TOP,
                &format!("A · #{a}"),
            );
            caption(
                &painter,
                egui::pos2(pic.right().min(rect.right()) - 4.0, top),
                egui::Align2::RIGHT_TOP,
                &format!("B · #{b}"),
            );
            response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "A/B wipe"));
        }
        _ => {
            let prompt = |id: u64| state.history.get(id).map_or(String::new(), |i| i.saved_prompt.clone());
            ui.columns(2, |cols| {
                for (col, (which, id, tex)) in cols.iter_mut().zip([("A", a, &ta), ("B", b, &tb)]) {
                    col.add(egui::Label::new(format!("{which} · #{id} · {}", prompt(id))).truncate())
                        .on_hover_text(prompt(id));
                    let name = format!("Picture {which}");
                    super::image_view::image_view_ui(col, tex, &mut view.side_view, &name);
                }
            });
        }
    }
}

/// A picture's caption drawn over it, on a dark plate so it reads on any picture.
fn caption(painter: &egui::Painter, at: egui::Pos2, anchor: egui::Align2, text: &str) {
    let galley = painter.layout_no_wrap(text.to_string(), egui::FontId::proportional(13.0), Color32::WHITE);
    let rect = anchor.anchor_size(at, galley.size()).expand(3.0);
    painter.rect_filled(rect, 3.0, Color32::from_black_alpha(170));
    painter.galley(rect.min + egui::vec2(3.0, 3.0), galley, Color32::WHITE);
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

fn grid_ui(ui: &mut Ui, state: &mut AppState, textures: &mut Textures, out: &mut Commands) {
    ui.horizontal(|ui| {
        let label = ui.label("Weights");
        ui.add(egui::TextEdit::singleline(&mut state.settings.grid_weights).desired_width(160.0))
            .labelled_by(label.id);
        let label = ui.label("Seeds");
        ui.add(egui::DragValue::new(&mut state.settings.grid_seeds).range(1..=8)).labelled_by(label.id);
        let ready = matches!(state.model, ModelStatus::Ready(_));
        if ui.add_enabled(ready, egui::Button::new("Render grid")).clicked() {
            out.push(UiCommand::QueueGrid);
        }
        let complete = !state.grid.rows.is_empty()
            && state.grid.cells.len() == state.grid.rows.len() * state.grid.cols.len();
        if ui.add_enabled(complete, egui::Button::new("Export grid…")).clicked() {
            out.push(UiCommand::ExportGrid);
        }
    });
    let grid = &state.grid;
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
                    match grid.cells.get(&(r, c)).and_then(|id| textures.get(&ctx, &state.history, *id)) {
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

/// One cell of the grid to render: its row, its column and what it draws.
pub type GridCell = (usize, usize, GenerationRequest);

/// The grid the settings describe: its labels, and one request per cell with its (row, column);
/// or why there is none.
pub fn grid_cells(state: &AppState) -> Result<(Grid, Vec<GridCell>), String> {
    let weights = match parse_weights(&state.settings.grid_weights)? {
        w if w.is_empty() => return Err("Give at least one weight for the grid.".into()),
        w => w,
    };
    let adapters: Vec<LoraSpec> =
        state.settings.loras.iter().filter(|s| s.enabled).map(|s| s.spec()).collect();
    if adapters.is_empty() {
        return Err("Add and enable at least one LoRA to make a grid.".into());
    }
    let base = state.settings.request();
    let seeds: Vec<u64> = (0..state.settings.grid_seeds as u64).map(|k| base.seed.wrapping_add(k)).collect();
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
                cells.push((row, col, GenerationRequest { seed, batch: 1, loras, ..base.clone() }));
            }
        }
    }
    Ok((grid, cells))
}

/// The finished grid as one labelled picture, with its description for the PNG.
pub fn grid_picture(state: &AppState) -> Result<(image::RgbImage, String), String> {
    let grid = &state.grid;
    let mut pictures = Vec::new();
    for r in 0..grid.rows.len() {
        let mut row = Vec::new();
        for c in 0..grid.cols.len() {
            let item = grid
                .cells
                .get(&(r, c))
                .and_then(|id| state.history.get(*id))
                .ok_or("the grid is not finished yet")?;
            let picture = crate::metrics::images::read_rgb(&item.path).map_err(|e| e.to_string())?;
            row.push(picture);
        }
        pictures.push(row);
    }
    let composed = super::grid_image::compose(&grid.rows, &grid.cols, &pictures);
    let text = format!(
        "LoRA grid: {}\nrows: {}\ncolumns: {}",
        state.settings.prompt,
        grid.rows.join("; "),
        grid.cols.join("; ")
    );
    Ok((composed, text))
}

#[cfg(test)]
mod tests {
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, pushed, session_with_model};
    use super::*;
    use crate::gui::state::LoraSlot;

    #[test]
    fn the_grid_tab_asks_for_the_render() {
        let (_dir, state) = session_with_model();
        let view = CompareView { mode: CompareMode::Grid, ..Default::default() };
        let mut h = harness(state, view, |ui, state, view, out| {
            compare_tab_ui(ui, state, view, &mut Textures::default(), out)
        });
        h.run();
        h.get_by_label("Render grid").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::QueueGrid]);
    }

    #[test]
    fn grid_rows_are_adapter_times_weight_and_columns_seeds() {
        let (_dir, mut state) = session_with_model();
        assert!(grid_cells(&state).expect_err("no adapter").contains("LoRA"));
        state.settings.loras.push(LoraSlot::new("ink.safetensors".into()));
        state.settings.grid_weights = "0, 0.5".into();
        state.settings.grid_seeds = 2;
        state.settings.seed = 40;
        let (grid, cells) = grid_cells(&state).expect("a grid");
        assert_eq!(grid.rows, ["ink × 0", "ink × 0.5"]);
        assert_eq!(grid.cols, ["seed 40", "seed 41"]);
        assert_eq!(cells.len(), 4);
        assert!(cells[0].2.loras.is_empty(), "weight 0 is the base model");
        assert_eq!(cells[3].2.loras[0].unet_weight, 0.5);
        assert_eq!(cells[3].2.seed, 41);
    }
}
