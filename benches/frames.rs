//! Frame times of the studio while the worker is busy: the real app under egui_kittest and the
//! tiny test model, the window asked for a frame every 16 ms. Two scenes: a long 512×512 render
//! (both cores busy), then live painting — a 512×512 canvas stroked continuously in bursts with
//! pauses, so live frames are asked for, cancelled when stale, rendered and shown. Reports the
//! time of the app's own `ui` pass and of the whole egui frame (layout, tessellation, AccessKit),
//! as percentiles. Run with `cargo bench --bench frames`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::gui::dialogs::ScriptedDialogs;
use easel::gui::state::ModelStatus;
use easel::gui::{EaselApp, LaunchOptions};
use easel::paths::Paths;
use egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Steps the window every 16 ms for `seconds`, calling `each` before every frame, and prints the
/// frame-time percentiles under `title`.
fn measure(
    h: &mut Harness<'_, EaselApp>,
    seconds: u64,
    title: &str,
    mut each: impl FnMut(&mut Harness<'_, EaselApp>, usize),
) {
    let (mut ui_ms, mut frame_ms) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        each(h, n);
        n += 1;
        let t = Instant::now();
        h.step();
        frame_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(d) = h.state().last_frame_time() {
            ui_ms.push(d.as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_millis(16).saturating_sub(t.elapsed()));
    }
    for v in [&mut ui_ms, &mut frame_ms] {
        v.sort_by(f64::total_cmp);
    }
    println!("{title}: {} frames over {seconds} s", frame_ms.len());
    for (name, v) in [("app ui pass", &ui_ms), ("whole egui frame", &frame_ms)] {
        println!(
            "  {name:<18} p50 {:6.2} ms  p95 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  (budget 16.7 ms)",
            percentile(v, 0.5),
            percentile(v, 0.95),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
}

fn main() {
    let root = tempfile::tempdir().expect("temp dir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = fixtures.join("tiny-sd").display().to_string();
    let paths = Paths::under(root.path().to_path_buf());
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = Harness::builder().with_size([1280.0, 820.0]).build_eframe(move |cc| {
        EaselApp::new(cc, LaunchOptions { paths, model: Some(model), dialogs, restore_settings: false })
    });
    while !matches!(h.state().state.model, ModelStatus::Ready(_)) {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    {
        let s = &mut h.state_mut().state.settings;
        s.prompt = "a lighthouse at dusk".into();
        (s.width, s.height, s.steps, s.batch) = (512, 512, 1000, 1);
    }
    h.get_by_label("Generate").click();
    h.step();
    let mut steps_seen = 0;
    measure(&mut h, 20, "while rendering 512×512 on the worker", |h, _| {
        if let Some(easel::gui::state::JobStatus::Running { step, .. }) =
            h.state().state.running().map(|j| j.status.clone())
        {
            steps_seen = step;
        }
    });
    println!("  ({steps_seen} denoising steps done)");
    h.state_mut().state.cancel_all();
    while !h.state().state.jobs.is_empty() {
        h.step();
    }

    // Strokes over a 512×512 canvas, in bursts of 0.5 s with pauses of 2.7 s: first without live
    // painting (the baseline), then with it, where the pauses let frames render and the bursts
    // cancel the stale ones.
    {
        let app = h.state_mut();
        app.state.settings.steps = 20;
        app.state.settings.live.autoencoder = Some(fixtures.join("tiny-taesd"));
        app.state.settings.live.preset = "lcm".into();
        app.state.settings.live.pause_secs = 0.1;
        app.canvas = easel::gui::Canvas::new(512, 512);
        app.canvas.size = 12.0;
    }
    h.get_by_role_and_label(Role::Button, "Canvas").click();
    h.step();
    let rect = h.get_by_role_and_label(Role::Image, "Canvas").rect();
    measure(&mut h, 10, "stroking a 512×512 canvas, live painting off", |h, n| stroke_event(h, rect, n));
    h.get_by_label("Live").click();
    h.step();
    // The canvas is narrower beside the live frame.
    let rect = h.get_by_role_and_label(Role::Image, "Canvas").rect();
    let mut shown = std::collections::HashSet::new();
    measure(&mut h, 30, "stroking a 512×512 canvas, live painting on", |h, n| {
        stroke_event(h, rect, n);
        if let Some(frame) = &h.state().state.live.frame {
            shown.insert(frame.id);
        }
    });
    let live = &h.state().state.live;
    println!("  ({} live frames shown, {} stale frames cancelled)", shown.len(), live.cancelled);
}

/// Frame `n`'s pointer event: in every 200 frames (3.2 s), a press, 29 moves along a curve over
/// `rect`, a release, then stillness.
fn stroke_event(h: &mut Harness<'_, EaselApp>, rect: egui::Rect, n: usize) {
    use egui::{Event, Modifiers, PointerButton};
    let t = n as f32 * 0.037;
    let pos = rect.lerp_inside(egui::vec2(0.5 + 0.4 * t.sin(), 0.5 + 0.4 * (1.3 * t).cos()));
    let button = |pressed| Event::PointerButton {
        pos,
        button: PointerButton::Primary,
        pressed,
        modifiers: Modifiers::NONE,
    };
    let events = &mut h.input_mut().events;
    match n % 200 {
        0 => events.extend([Event::PointerMoved(pos), button(true)]),
        1..=29 => events.push(Event::PointerMoved(pos)),
        30 => events.push(button(false)),
        _ => {}
    }
}
