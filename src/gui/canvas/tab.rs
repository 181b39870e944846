//! The Canvas tab: the toolbar, and the canvas area that turns every pointer event of a frame
//! into stroke points (from the press to the release, with pen pressure where reported). With
//! Live on, the live row sits under the toolbar and the live frame beside the canvas.

use egui::{Color32, Pos2, Rect, Sense, Ui};

use super::super::command::{Commands, UiCommand};
use super::super::state::AppState;
use super::{Canvas, Tool};

/// The Canvas tab.
pub fn canvas_tab_ui(ui: &mut Ui, canvas: &mut Canvas, state: &mut AppState, out: &mut Commands) {
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
        ui.separator();
        let live = ui.selectable_label(state.live.on, "Live").on_hover_text(
            "Live painting: the picture follows your brush, re-rendered a moment after each change",
        );
        if live.clicked() {
            state.live.on = !state.live.on;
            if !state.live.on {
                state.live.cancel();
            }
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
    if state.live.on {
        super::super::live::live_bar_ui(ui, state, out);
        let size = canvas.size_px();
        let half =
            egui::vec2((ui.available_width() - ui.spacing().item_spacing.x) / 2.0, ui.available_height());
        ui.horizontal_top(|ui| {
            ui.allocate_ui(half, |ui| canvas_area_ui(ui, canvas));
            ui.allocate_ui(half, |ui| super::super::live::frame_ui(ui, state, size));
        });
        return;
    }
    if state.settings.canvas_use == super::super::state::CanvasUse::Off {
        ui.weak("Choose “Canvas” or “Inpaint” under “Start from” on the left to generate from this canvas.");
    }
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

    use super::super::super::test_support::{harness, session, PanelState};
    use super::*;

    const WHITE: [u8; 3] = [255, 255, 255];

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
}
