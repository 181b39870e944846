//! Frame times of the studio while a generation runs: the real app under egui_kittest, the tiny
//! test model rendering a long 512×512 job on the worker (both cores busy), and the window asked
//! for a frame every 16 ms. Reports the time of the app's own `ui` pass and of the whole egui frame
//! (layout, tessellation, AccessKit), as percentiles. Run with `cargo bench --bench frames`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::gui::dialogs::ScriptedDialogs;
use easel::gui::state::ModelStatus;
use easel::gui::{EaselApp, LaunchOptions};
use easel::paths::Paths;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let root = tempfile::tempdir().expect("temp dir");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd").display().to_string();
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
    let (mut ui_ms, mut frame_ms) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut steps_seen = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        h.step();
        frame_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(d) = h.state().last_frame_time() {
            ui_ms.push(d.as_secs_f64() * 1e3);
        }
        if let Some(easel::gui::state::JobStatus::Running { step, .. }) =
            h.state().state.running().map(|j| j.status.clone())
        {
            steps_seen = step;
        }
        std::thread::sleep(Duration::from_millis(16).saturating_sub(t.elapsed()));
    }
    h.state_mut().state.cancel_all();
    for v in [&mut ui_ms, &mut frame_ms] {
        v.sort_by(f64::total_cmp);
    }
    println!("frames while rendering 512×512 on the worker: {} frames over 20 s, {steps_seen} denoising steps done", frame_ms.len());
    for (name, v) in [("app ui pass", &ui_ms), ("whole egui frame", &frame_ms)] {
        println!(
            "{name:<18} p50 {:6.2} ms  p95 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  (budget 16.7 ms)",
            percentile(v, 0.5),
            percentile(v, 0.95),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
}
