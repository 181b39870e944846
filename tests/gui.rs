//! The studio driven through AccessKit with egui_kittest: the real `EaselApp`, the real worker
//! and the tiny test model. Dialogs are scripted; everything else is what a painter clicks.
#![cfg(feature = "gui")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use easel::gui::dialogs::ScriptedDialogs;
use easel::gui::state::{EvalStatus, ModelStatus, Tab};
use easel::gui::{EaselApp, LaunchOptions, UiCommand};
use easel::paths::Paths;
use egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

fn tiny_model() -> String {
    fixtures().join("tiny-sd").display().to_string()
}

fn studio(root: &Path, model: Option<String>, dialogs: Arc<ScriptedDialogs>) -> Harness<'static, EaselApp> {
    let paths = Paths::under(root.to_path_buf());
    Harness::builder().with_size([1280.0, 820.0]).build_eframe(move |cc| {
        EaselApp::new(cc, LaunchOptions { paths, model, dialogs, restore_settings: false })
    })
}

/// Steps frames until `done` holds (the worker runs meanwhile), failing after two minutes.
fn wait_until(h: &mut Harness<'_, EaselApp>, what: &str, done: impl Fn(&EaselApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(h.state()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; notices: {:?}",
            h.state().state.notices
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

/// Small, fast settings for the tiny model.
fn quick_settings(h: &mut Harness<'_, EaselApp>, steps: usize) {
    let s = &mut h.state_mut().state.settings;
    s.steps = steps;
    (s.width, s.height) = (64, 64);
    s.seed = 7;
    s.seed_locked = true;
}

fn ready(app: &EaselApp) -> bool {
    matches!(app.state.model, ModelStatus::Ready(_))
}

fn idle(app: &EaselApp) -> bool {
    app.state.jobs.is_empty()
}

#[test]
fn prompt_lora_generate_cancel_compare_measure_export() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), Some(tiny_model()), Arc::clone(&dialogs));
    wait_until(&mut h, "the model to load", ready);

    // Without a tiny decoder on this computer, previews are approximate and one click fetches it.
    if h.query_by_label("Live preview: tiny decoder").is_none() {
        assert!(h.query_by_label("Live preview: approximate colours").is_some());
        assert!(h.query_by_role_and_label(Role::Button, "Get detailed previews").is_some());
    }

    // Type a prompt.
    h.get_by_label("Prompt").focus();
    h.step();
    h.get_by_label("Prompt").type_text("a lighthouse at dusk");
    h.step();
    assert_eq!(h.state().state.settings.prompt, "a lighthouse at dusk");

    // Add a LoRA through the file dialog and move its slider.
    let lora = fixtures().join("lora/inkStyle.safetensors");
    dialogs.push(lora.clone());
    h.get_by_role_and_label(Role::Button, "Add file…").click();
    wait_until(&mut h, "the LoRA to be read", |a| a.state.lora_info.contains_key(&lora));
    let info = &h.state().state.lora_info[&lora];
    assert!(matches!(info.compatibility, Some(Ok(_))), "{:?}", info.compatibility);
    h.get_by_role_and_label(Role::Slider, "inkStyle weight").set_value_accesskit(0.5);
    h.step();
    assert_eq!(h.state().state.settings.loras[0].weight, 0.5);

    // Generate; the picture lands in the gallery with the stack in its parameters.
    quick_settings(&mut h, 3);
    h.get_by_role_and_label(Role::Button, "Generate").click();
    h.step();
    assert_eq!(h.state().state.jobs.len(), 1, "queued");
    wait_until(&mut h, "the picture", |a| idle(a) && a.state.history.items.len() == 1);
    let item = h.state().state.history.items[0].clone();
    assert!(item.path.is_file());
    assert_eq!(item.request.loras[0].unet_weight, 0.5);
    assert!(item.saved_prompt.contains("<lora:inkStyle:0.5>"), "{}", item.saved_prompt);
    assert!(h.query_by_role_and_label(Role::Image, "Selected picture").is_some(), "the Image tab shows it");

    // Cancel a long run within a step; the gallery keeps what it had.
    h.state_mut().state.settings.steps = 400;
    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the long run to start", |a| {
        a.state.running().is_some_and(
            |j| matches!(j.status, easel::gui::state::JobStatus::Running { step, .. } if step >= 1),
        )
    });
    h.get_by_role_and_label(Role::Button, "Cancel").click();
    let cancelled_at = Instant::now();
    wait_until(&mut h, "the cancel", idle);
    assert!(cancelled_at.elapsed() < Duration::from_secs(30));
    assert!(h.state().state.notices.iter().any(|n| n.text.starts_with("Cancelled")));
    assert_eq!(h.state().state.history.items.len(), 1);

    // A second picture, without the LoRA, then the A/B compare view.
    quick_settings(&mut h, 3);
    h.state_mut().state.settings.loras[0].enabled = false;
    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the second picture", |a| idle(a) && a.state.history.items.len() == 2);
    h.get_by_role_and_label(Role::Button, "Compare").click();
    h.step();
    wait_until(&mut h, "the wipe view", |a| a.state.settings.tab == Tab::Compare);
    for _ in 0..5 {
        h.step();
    }
    assert!(h.query_by_role_and_label(Role::Image, "A/B wipe").is_some(), "the wipe view is shown");
    h.get_by_role_and_label(Role::Button, "Side by side").click();
    h.step();
    h.step();
    assert!(
        h.query_by_role_and_label(Role::Image, "Picture A").is_some()
            && h.query_by_role_and_label(Role::Image, "Picture B").is_some()
    );

    // A small metrics comparison: base against the LoRA, two pictures each.
    h.state_mut().state.settings.loras[0].enabled = true;
    {
        let f = &mut h.state_mut().state.settings.metrics;
        f.reference_dir = fixtures().join("metrics/reference").display().to_string();
        f.images_per_config = 2;
        f.inception = formula_weights().display().to_string();
    }
    h.get_by_role_and_label(Role::Button, "Metrics").click();
    h.step();
    h.get_by_role_and_label(Role::Button, "Run comparison").click();
    h.step();
    assert!(matches!(h.state().state.eval, EvalStatus::Running { .. }), "{:?}", h.state().state.notices);
    wait_until(&mut h, "the metrics table", |a| !matches!(a.state.eval, EvalStatus::Running { .. }));
    let EvalStatus::Done(results) = h.state().state.eval.clone() else {
        panic!("no results: {:?}", h.state().state.notices);
    };
    assert_eq!(results.rows.len(), 2);
    assert_eq!(results.rows[0].config.label, "base");
    assert!(results.rows.iter().all(|r| r.report.fid.is_some_and(f64::is_finite) && r.report.count == 2));
    assert!(results.rows[0].report.fid != results.rows[1].report.fid, "the LoRA changes the pictures");
    h.step();
    assert!(h.query_by_label("FID").is_some(), "the table is shown");
    let csv_path = root.path().join("metrics.csv");
    dialogs.push(csv_path.clone());
    h.get_by_role_and_label(Role::Button, "Export CSV…").click();
    // The dialog answers from its own thread; the file follows a frame or two later.
    wait_until(&mut h, "the CSV", |_| csv_path.exists());
    let csv = std::fs::read_to_string(&csv_path).expect("csv written");
    assert!(
        csv.lines().count() == 3 && csv.lines().nth(1).is_some_and(|l| l.starts_with("\"base\"")),
        "{csv}"
    );

    // Export the first picture and read its metadata back.
    h.state_mut().state.selected = Some(item.id);
    h.get_by_role_and_label(Role::Button, "Image").click();
    h.step();
    let exported = root.path().join("exported.png");
    dialogs.push(exported.clone());
    h.get_by_role_and_label(Role::Button, "Export…").click();
    wait_until(&mut h, "the exported picture", |_| exported.exists());
    let texts = easel::export::png::read_png_text(&exported).expect("exported PNG");
    assert!(
        texts["parameters"].contains("a lighthouse at dusk <lora:inkStyle:0.5>"),
        "{}",
        texts["parameters"]
    );
    assert!(texts["parameters"].contains("Seed: 7"));
    // Exporting over it again is refused with a message, and the file is unchanged.
    h.step(); // the confirmation line moved the layout
    dialogs.push(exported.clone());
    let before = h.state().state.notices.len();
    h.get_by_role_and_label(Role::Button, "Export…").click();
    wait_until(&mut h, "the refusal", |a| a.state.notices.len() > before);
    let last = h.state().state.notices.last().cloned();
    assert!(last.as_ref().is_some_and(|n| n.is_error && n.text.contains("exported.png")), "{last:?}");
}

#[test]
fn an_sdxl_model_takes_its_sizes_an_sdxl_lora_and_refuses_an_sd1_one() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let model = fixtures().join("tiny-sdxl.safetensors").display().to_string();
    let mut h = studio(root.path(), Some(model), Arc::clone(&dialogs));
    wait_until(&mut h, "the SDXL model to load", ready);
    assert!(h.query_by_label_contains("tiny-sdxl — SDXL").is_some(), "the family is shown");
    let s = &h.state().state.settings;
    assert_eq!((s.width, s.height), (1024, 1024), "SDXL starts at its own size");

    // An SD 1.x LoRA is refused with a sentence beside it; an SDXL one fits.
    let sd1 = fixtures().join("lora/inkStyle.safetensors");
    dialogs.push(sd1.clone());
    h.get_by_role_and_label(Role::Button, "Add file…").click();
    wait_until(&mut h, "the SD 1.x LoRA to be read", |a| a.state.lora_info.contains_key(&sd1));
    let refused = h.state().state.lora_info[&sd1].compatibility.clone();
    assert!(matches!(&refused, Some(Err(why)) if why.contains("the model is SDXL")), "{refused:?}");
    h.step();
    assert!(h.query_by_label_contains("inkStyle was made for").is_some(), "the refusal is shown");
    h.state_mut().state.settings.loras.clear();
    h.step();
    h.step();
    let xl = fixtures().join("lora/sdxl_kohya.safetensors");
    dialogs.push(xl.clone());
    h.get_by_role_and_label(Role::Button, "Add file…").click();
    wait_until(&mut h, "the SDXL LoRA to be read", |a| a.state.lora_info.contains_key(&xl));
    let info = h.state().state.lora_info[&xl].compatibility.clone();
    assert!(matches!(&info, Some(Ok(_))), "{info:?}");

    // Generate with it at a small size: the picture lands in the gallery with its LoRA.
    quick_settings(&mut h, 2);
    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the SDXL picture", |a| idle(a) && a.state.history.items.len() == 1);
    let item = h.state().state.history.items[0].clone();
    assert!(item.path.is_file(), "{:?}", h.state().state.notices);
    assert_eq!(item.request.loras[0].name, "sdxl_kohya");
    assert!(item.saved_prompt.contains("<lora:sdxl_kohya:1>"), "{}", item.saved_prompt);
}

#[test]
fn first_run_explains_models_and_opens_a_folder() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), None, Arc::clone(&dialogs));
    h.step();
    assert!(h.query_by_label_contains("Easel draws with a Stable Diffusion model").is_some());
    h.snapshot("first_run");
    dialogs.push(PathBuf::from(tiny_model()));
    h.get_by_role_and_label(Role::Button, "Open a diffusers folder…").click();
    wait_until(&mut h, "the model to load", ready);
    assert_eq!(h.state().state.settings.recent_models, vec![tiny_model()]);
}

#[test]
fn bad_models_and_pictures_show_messages_instead_of_crashing() {
    let root = tempfile::tempdir().expect("temp dir");
    let broken = root.path().join("broken.safetensors");
    std::fs::write(&broken, b"not a checkpoint").expect("write");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), Some(broken.display().to_string()), Arc::clone(&dialogs));
    wait_until(&mut h, "the load to fail", |a| !a.state.notices.is_empty());
    let notice = h.state().state.notices[0].clone();
    assert!(notice.is_error && notice.text.contains("broken.safetensors"), "{}", notice.text);
    assert_eq!(h.state().state.model, ModelStatus::None);
    h.step();
    assert!(h.query_by_label_contains("broken.safetensors").is_some(), "the message is in the window");

    // A failed load keeps the model that was working.
    h.state_mut().run_command(UiCommand::LoadModel(tiny_model()));
    wait_until(&mut h, "the tiny model", ready);
    h.state_mut().run_command(UiCommand::LoadModel(broken.display().to_string()));
    wait_until(&mut h, "the second failure", |a| a.state.notices.len() == 2);
    wait_until(&mut h, "the previous model to be reported", ready);

    // Importing settings from a picture without any is refused with its name.
    let plain = root.path().join("plain.png");
    image::RgbImage::new(8, 8).save(&plain).expect("png");
    h.state_mut().run_command(UiCommand::ImportSettings(plain.clone()));
    assert!(h.state().state.notices.last().is_some_and(|n| n.text.contains("plain.png")));
    // Metrics without Inception weights say where to get them.
    {
        let f = &mut h.state_mut().state.settings.metrics;
        f.reference_dir = fixtures().join("metrics/reference").display().to_string();
        f.images_per_config = 2;
        f.inception = root.path().join("missing.pth").display().to_string();
    }
    h.get_by_role_and_label(Role::Button, "Metrics").click();
    h.step();
    h.get_by_role_and_label(Role::Button, "Run comparison").click();
    h.step();
    wait_until(&mut h, "the comparison to stop", |a| !matches!(a.state.eval, EvalStatus::Running { .. }));
    let last = h.state().state.notices.last().cloned();
    assert!(
        last.as_ref().is_some_and(|n| n.is_error && n.text.contains("Inception weights are missing")),
        "{last:?}"
    );
}

#[test]
fn a_failing_job_is_reported_and_the_next_one_runs() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut h = studio(root.path(), Some(tiny_model()), Arc::new(ScriptedDialogs::default()));
    wait_until(&mut h, "the model to load", ready);

    // A config with zero heads used to panic the worker, leaving "Loading…" for ever.
    let zero_heads = root.path().join("zero-heads");
    copy_tree(&fixtures().join("tiny-sd"), &zero_heads);
    let config = zero_heads.join("unet/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("json");
    json["attention_head_dim"] = serde_json::json!(0);
    std::fs::write(&config, json.to_string()).expect("write");
    h.state_mut().run_command(UiCommand::LoadModel(zero_heads.display().to_string()));
    wait_until(&mut h, "the load to fail", |a| !a.state.notices.is_empty());
    wait_until(&mut h, "the previous model to be reported", ready);
    let notice = h.state().state.notices[0].text.clone();
    assert!(notice.contains("attention_head_dim is 0"), "{notice}");
    assert!(h.query_by_label_contains("attention_head_dim is 0").is_some(), "the window shows it");

    // A render whose numbers overflow fails with a sentence; nothing black lands in the gallery.
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let loud = root.path().join("loud.safetensors");
    let big: Vec<u8> = [3e38f32; 32].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = [("lora_up.weight", vec![32, 1]), ("lora_down.weight", vec![1, 32])].map(|(param, shape)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &big).expect("view");
        (format!("{module}.{param}"), view)
    });
    safetensors::serialize_to_file(views, None, &loud).expect("written");
    h.state_mut().state.settings.loras.push(easel::gui::state::LoraSlot::from_spec(
        &easel::engine::LoraSpec { name: "loud".into(), path: loud, unet_weight: 1.0, text_weight: 1.0 },
    ));
    quick_settings(&mut h, 2);
    h.get_by_role_and_label(Role::Button, "Generate").click();
    h.step();
    wait_until(&mut h, "the render to fail", |a| idle(a) && a.state.notices.len() == 2);
    let notice = h.state().state.notices[1].text.clone();
    assert!(notice.contains("NaN") && notice.contains("nothing was saved"), "{notice}");
    assert!(h.state().state.history.items.is_empty());

    // The next job runs as if nothing happened.
    h.state_mut().state.settings.loras.clear();
    h.get_by_role_and_label(Role::Button, "Generate").click();
    h.step();
    wait_until(&mut h, "the picture", |a| idle(a) && a.state.history.items.len() == 1);
}

#[test]
fn the_gallery_survives_a_restart() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut h = studio(root.path(), Some(tiny_model()), Arc::new(ScriptedDialogs::default()));
    wait_until(&mut h, "the model to load", ready);
    h.state_mut().state.settings.prompt = "kept".into();
    quick_settings(&mut h, 2);
    h.state_mut().state.settings.batch = 2;
    h.get_by_role_and_label(Role::Button, "Generate").click();
    h.step();
    wait_until(&mut h, "two pictures", |a| idle(a) && a.state.history.items.len() == 2);
    let index = root.path().join("data/history.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while easel::history::History::load(&index).map_or(0, |hist| hist.items.len()) < 2 {
        assert!(Instant::now() < deadline, "the history was not saved");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(h);
    let mut again = studio(root.path(), None, Arc::new(ScriptedDialogs::default()));
    again.step();
    let items = &again.state().state.history.items;
    assert_eq!(items.iter().map(|i| i.request.seed).collect::<Vec<_>>(), vec![7, 8]);
    again.get_by_role_and_label(Role::Button, "Gallery").click();
    again.run_steps(3);
    assert!(again.query_by_label("#1").is_some() && again.query_by_label("#2").is_some());
    // A click on a thumbnail opens the picture in the Image tab.
    again.get_by_label("Open picture #1").click();
    again.run_steps(3);
    assert_eq!((again.state().state.selected, again.state().state.settings.tab), (Some(1), Tab::Image));
    // Right-click → Delete moves the file to the trash folder and takes it out of the gallery.
    again.get_by_role_and_label(Role::Button, "Gallery").click();
    again.run_steps(3);
    let path = again.state().state.history.items[0].path.clone();
    again.get_by_label("Open picture #1").click_secondary();
    again.run_steps(3);
    again.get_by_label("Delete").click();
    again.run_steps(3);
    assert_eq!(again.state().state.history.items.iter().map(|i| i.id).collect::<Vec<_>>(), vec![2]);
    let trashed = path.parent().expect("gallery").join(".trash").join(path.file_name().expect("name"));
    assert!(!path.exists() && trashed.is_file(), "moved to {}", trashed.display());
}

/// Hides parts that change from run to run (timings) before a snapshot.
fn mask_timings(h: &mut Harness<'_, EaselApp>) {
    let rects: Vec<egui::Rect> = h.query_all_by_label_contains(" steps ").map(|n| n.rect()).collect();
    for r in rects {
        h.mask(r);
    }
}

/// Snapshots of the main views, rendered by wgpu (lavapipe on CI) and compared with
/// `tests/snapshots/*.png` (`UPDATE_SNAPSHOTS=1 cargo test --test gui` after a deliberate change).
#[test]
fn snapshots_of_the_main_views() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), Some(tiny_model()), Arc::clone(&dialogs));
    wait_until(&mut h, "the model to load", ready);
    let lora = fixtures().join("lora/inkStyle.safetensors");
    dialogs.push(lora.clone());
    h.get_by_role_and_label(Role::Button, "Add file…").click();
    wait_until(&mut h, "the LoRA", |a| a.state.lora_info.contains_key(&lora));
    h.state_mut().state.settings.prompt = "a lighthouse at dusk".into();
    quick_settings(&mut h, 4);
    for seed in [7, 8] {
        h.state_mut().state.settings.seed = seed;
        h.get_by_role_and_label(Role::Button, "Generate").click();
        h.step();
        wait_until(&mut h, "the picture", idle);
    }
    wait_until(&mut h, "two pictures", |a| a.state.history.items.len() == 2);
    h.run_steps(3);
    mask_timings(&mut h);
    h.snapshot("image_tab");

    h.get_by_role_and_label(Role::Button, "Gallery").click();
    h.run_steps(4);
    h.snapshot("gallery_tab");

    h.get_by_role_and_label(Role::Button, "Compare").click();
    h.run_steps(4);
    h.snapshot("compare_wipe");

    h.get_by_role_and_label(Role::Button, "Canvas").click();
    {
        let c = &mut h.state_mut().canvas;
        c.color = [200, 40, 40];
        c.size = 40.0;
        c.begin_stroke(80.0, 400.0);
        c.stroke_to(420.0, 120.0);
        c.end_stroke();
        c.tool = easel::gui::canvas::Tool::Mask;
        c.begin_stroke(100.0, 100.0);
        c.stroke_to(200.0, 150.0);
        c.end_stroke();
    }
    h.run_steps(3);
    h.snapshot("canvas_tab");

    h.get_by_role_and_label(Role::Button, "Metrics").click();
    h.run_steps(3);
    h.snapshot("metrics_form");

    // A small window: every control of the Canvas and Metrics tabs stays inside it.
    h.set_size(egui::vec2(1024.0, 700.0));
    let inside = |r: egui::Rect| r.right() <= 1024.0 && r.bottom() <= 700.0;
    h.run_steps(3);
    for control in ["Run comparison", "Inception weights", "Sweep weights"] {
        for node in h.get_all_by_label(control) {
            assert!(inside(node.rect()), "{control} at {:?}", node.rect());
        }
    }
    h.snapshot("metrics_form_1024x700");
    h.get_by_role_and_label(Role::Button, "Canvas").click();
    h.run_steps(3);
    for control in ["Opacity", "Clear", "New canvas at the generation size"] {
        for node in h.get_all_by_label(control) {
            assert!(inside(node.rect()), "{control} at {:?}", node.rect());
        }
    }
    h.snapshot("canvas_tab_1024x700");
}

/// A file dialog that stays open until the test answers it, as a person takes their time.
struct HeldDialog(std::sync::Mutex<std::sync::mpsc::Receiver<PathBuf>>);

impl easel::gui::dialogs::Dialogs for HeldDialog {
    fn open_file(&self, _: &str, _: &[&str]) -> Option<PathBuf> {
        self.0.lock().ok()?.recv().ok()
    }
    fn open_folder(&self, _: &str) -> Option<PathBuf> {
        self.0.lock().ok()?.recv().ok()
    }
    fn save_file(&self, _: &str, _: &str) -> Option<PathBuf> {
        self.0.lock().ok()?.recv().ok()
    }
}

#[test]
fn a_file_dialog_left_open_does_not_stop_the_render_or_the_window() {
    let root = tempfile::tempdir().expect("temp dir");
    let (answer, answers) = std::sync::mpsc::channel();
    let dialogs = Arc::new(HeldDialog(std::sync::Mutex::new(answers)));
    let paths = Paths::under(root.path().to_path_buf());
    let model = Some(tiny_model());
    let mut h = Harness::builder().with_size([1280.0, 820.0]).build_eframe(move |cc| {
        EaselApp::new(cc, LaunchOptions { paths, model, dialogs, restore_settings: false })
    });
    wait_until(&mut h, "the model to load", ready);
    quick_settings(&mut h, 6);
    // The dialog opens and waits; frames go on, a render starts and finishes meanwhile.
    h.get_by_role_and_label(Role::Button, "Add file…").click();
    h.step();
    h.get_by_role_and_label(Role::Button, "Generate").click();
    h.step();
    assert_eq!(h.state().state.jobs.len(), 1, "queued while the dialog is open");
    wait_until(&mut h, "the picture, with the dialog still open", |a| {
        idle(a) && a.state.history.items.len() == 1
    });
    assert!(h.state().state.settings.loras.is_empty(), "nothing chosen yet");
    let lora = fixtures().join("lora/inkStyle.safetensors");
    answer.send(lora.clone()).expect("the dialog thread waits");
    wait_until(&mut h, "the chosen adapter", |a| a.state.settings.loras.iter().any(|s| s.path == lora));
}

#[test]
fn a_message_longer_than_the_window_wraps_and_is_read_whole() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut h = studio(root.path(), None, Arc::new(ScriptedDialogs::default()));
    h.step();
    let text =
        format!("Could not download someone/model: {}the end", "the hub did not answer in time; ".repeat(12));
    h.state_mut().state.error(text.clone());
    h.state_mut().state.info("A second message");
    h.run_steps(3);
    let r = h.get_by_label(&text).rect();
    assert!(r.right() <= 1280.0 && r.height() > 20.0, "wrapped onto more lines inside the window: {r:?}");
    h.get_by_role_and_label(Role::Button, "Clear all").click();
    h.run_steps(2);
    assert!(h.state().state.notices.is_empty());
}

#[test]
fn an_a1111_picture_is_made_again_from_its_settings_and_embeddings() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), Some(tiny_model()), Arc::clone(&dialogs));
    wait_until(&mut h, "the model to load", ready);
    // The golden carries A1111's own parameters text: GPU noise, embeddings, No-norm emphasis.
    let golden = fixtures().join("golden/a1111_sd1_embeddings.png");
    h.state_mut().run_command(UiCommand::ImportSettings(golden.clone()));
    h.step();
    {
        let s = &h.state().state.settings;
        assert_eq!(s.rng, easel::engine::rng::NoiseSource::Gpu, "A1111's default noise");
        assert_eq!(s.sampler_impl, easel::engine::samplers::SamplerImpl::A1111);
        assert_eq!(s.emphasis, easel::engine::prompt::Emphasis::NoNorm);
    }
    // The embeddings folder is listed in the A1111 section; a click adds a name to the prompt.
    h.state_mut().state.settings.embeddings_dir = fixtures().join("embeddings").display().to_string();
    h.get_by_label("A1111 compatibility").click();
    h.step();
    assert!(h.query_by_label("Emphasis").is_some() && h.query_by_label("Clip skip").is_some());
    // The prompt's tokens are counted as A1111 counts them: the three embedding vectors of
    // `tinystyle` and the words, in one chunk of 75.
    let count = easel::gui::token_count::count_tokens(
        &h.state().state.settings.prompt,
        easel::engine::prompt::Emphasis::NoNorm,
        10,
        &easel::engine::tokenizer::Tokenizer::bundled(easel::engine::tokenizer::EOS).expect("tokenizer"),
        &easel::engine::embeddings::EmbeddingDb::load(
            &fixtures().join("embeddings"),
            &easel::engine::tokenizer::Tokenizer::bundled(easel::engine::tokenizer::EOS).expect("tokenizer"),
        ),
    );
    assert!(count.ends_with("/75"), "{count}");
    assert!(h.query_by_label(&count).is_some(), "the counter {count} is shown beside the prompt");
    // An SDXL embedding cannot be added to an SD 1.x model's prompt.
    use egui_kittest::kittest::NodeT;
    assert!(h.get_by_role_and_label(Role::Button, "tinyxl").accesskit_node().is_disabled());
    assert!(!h.get_by_role_and_label(Role::Button, "tinyneg").accesskit_node().is_disabled());
    let prompt = h.state().state.settings.prompt.clone();
    h.get_by_role_and_label(Role::Button, "tinyneg").click();
    h.step();
    assert_eq!(h.state().state.settings.prompt, format!("{prompt}, tinyneg"));
    h.state_mut().state.settings.prompt = prompt;

    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the picture", |a| idle(a) && a.state.history.items.len() == 1);
    let item = h.state().state.history.items[0].clone();
    assert!(item.path.is_file(), "{:?}", h.state().state.notices);
    assert_matches_golden(&item.path, &golden);
}

#[test]
fn a_canvas_sketch_steers_the_render_through_a_scribble_unit() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), Some(tiny_model()), Arc::clone(&dialogs));
    wait_until(&mut h, "the model to load", ready);
    quick_settings(&mut h, 3);
    h.state_mut().state.settings.prompt = "a lighthouse".into();
    // A dark stroke across the white canvas.
    {
        let c = &mut h.state_mut().canvas;
        c.size = 30.0;
        c.begin_stroke(60.0, 60.0);
        c.stroke_to(400.0, 300.0);
        c.end_stroke();
    }
    // Open the ControlNet panel, add a unit (scribble from the canvas) and choose its model.
    h.get_by_label("ControlNet").click();
    h.step();
    h.get_by_role_and_label(Role::Button, "Add unit").click();
    // The new unit unfolds over a few frames.
    h.run_steps(10);
    let sd15 = fixtures().join("controlnet/sd15");
    dialogs.push(sd15.clone());
    h.get_by_role_and_label(Role::Button, "Model file…").click();
    wait_until(&mut h, "the model to be chosen", |a| a.state.settings.controls[0].spec.model == sd15);
    assert!(h.query_by_label("Unit 0: sd15").is_some());
    assert!(h.query_by_label("Preprocessor").is_some());
    h.get_by_role_and_label(Role::Slider, "Weight").set_value_accesskit(0.9);
    h.run_steps(3);
    assert_eq!(h.state().state.settings.controls[0].spec.weight, 0.9);
    // The unit with its scribble map of the stroke, drawn in the left panel.
    h.snapshot("controlnet_panel");

    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the picture", |a| idle(a) && a.state.history.items.len() == 1);
    let item = h.state().state.history.items[0].clone();
    assert!(item.path.is_file(), "{:?}", h.state().state.notices);
    // The request names the saved canvas copy the map was made from; the PNG names the unit.
    let unit = &item.request.controls[0];
    assert!(
        matches!(unit.preprocess, easel::engine::controlnet::Preprocessor::Scribble { .. }),
        "Easel's JSON keeps it"
    );
    let source = unit.image.clone().expect("the canvas copy");
    assert!(source.is_file());
    let map =
        easel::engine::controlnet::prepare::control_map(unit, &load_rgb(&source), 64, 64, None).expect("map");
    assert!(
        map.image.pixels().any(|p| p.0 == [255; 3]) && map.image.pixels().any(|p| p.0 == [0; 3]),
        "strokes on black"
    );
    let texts = easel::export::png::read_png_text(&item.path).expect("text");
    assert!(
        texts["parameters"].contains(
            "ControlNet 0: \"Module: invert (from white bg & black line), Model: sd15, Weight: 0.9"
        ),
        "{}",
        texts["parameters"]
    );

    // The same settings without the unit give another picture: the sketch steered this one.
    h.state_mut().state.settings.controls[0].enabled = false;
    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the second picture", |a| idle(a) && a.state.history.items.len() == 2);
    let plain = h.state().state.history.items[1].path.clone();
    let (psnr, _) = compare(&load_rgb(&item.path), &load_rgb(&plain));
    assert!(psnr < 40.0, "the unit changed the picture only {psnr:.1} dB");
}

/// Draws a stroke on the canvas with real pointer events, from `from` to `to` (fractions of the
/// canvas's width and height).
fn stroke(h: &mut Harness<'_, EaselApp>, from: (f32, f32), to: (f32, f32)) {
    use egui::{Event, Modifiers, PointerButton};
    let rect = h.get_by_role_and_label(Role::Image, "Canvas").rect();
    let at = |(x, y): (f32, f32)| rect.lerp_inside(egui::vec2(x, y));
    let (a, b) = (at(from), at(to));
    let middle = a.lerp(b, 0.5);
    let button = |pos, pressed| Event::PointerButton {
        pos,
        button: PointerButton::Primary,
        pressed,
        modifiers: Modifiers::NONE,
    };
    for event in [
        Event::PointerMoved(a),
        button(a, true),
        Event::PointerMoved(middle),
        Event::PointerMoved(b),
        button(b, false),
    ] {
        h.input_mut().events.push(event);
        h.step();
    }
}

#[test]
fn live_painting_follows_the_brush_and_keep_adds_a_full_picture() {
    let root = tempfile::tempdir().expect("temp dir");
    let dialogs = Arc::new(ScriptedDialogs::default());
    let mut h = studio(root.path(), Some(tiny_model()), Arc::clone(&dialogs));
    wait_until(&mut h, "the model to load", ready);
    quick_settings(&mut h, 3);
    {
        let s = &mut h.state_mut().state.settings;
        s.prompt = "a lighthouse, ink".into();
        s.live.autoencoder = Some(fixtures().join("tiny-taesd"));
        s.live.preset = "lcm".into();
    }
    h.state_mut().canvas = easel::gui::Canvas::new(64, 64);
    h.state_mut().canvas.size = 8.0;
    h.get_by_role_and_label(Role::Button, "Canvas").click();
    h.step();
    h.get_by_label("Live").click();
    h.step();
    assert!(h.state().state.live.on);
    assert!(
        h.query_by_role_and_label(Role::Image, "Live frame").is_some(),
        "the frame sits beside the canvas"
    );
    h.run_steps(2);
    h.snapshot("live_mode");

    // A stroke; a moment after it, a frame.
    stroke(&mut h, (0.1, 0.1), (0.9, 0.9));
    assert!(h.state().canvas.can_undo_redo().0, "the stroke was drawn");
    wait_until(&mut h, "the first frame", |a| a.state.live.frame.is_some() && !a.state.live.rendering());
    let first = h.state().state.live.frame.as_ref().map(|f| f.id).expect("a frame");

    // Strokes made while a frame waits for the worker (busy with a long render) cancel it.
    h.state_mut().state.settings.steps = 400;
    h.get_by_role_and_label(Role::Button, "Generate").click();
    wait_until(&mut h, "the long render to start", |a| a.state.running().is_some());
    stroke(&mut h, (0.9, 0.1), (0.1, 0.9));
    wait_until(&mut h, "a frame to be asked for", |a| a.state.live.rendering());
    let cancelled = h.state().state.live.cancelled;
    stroke(&mut h, (0.5, 0.0), (0.5, 1.0));
    assert_eq!(h.state().state.live.cancelled, cancelled + 1, "the stale frame was cancelled at once");
    h.state_mut().state.cancel_all();
    h.state_mut().state.settings.steps = 3;
    wait_until(&mut h, "the newest frame", |a| {
        idle(a) && !a.state.live.rendering() && a.state.live.frame.as_ref().is_some_and(|f| f.id > first)
    });

    // The frame on show is the newest canvas's: `easel generate` makes it from the same settings.
    let canvas = root.path().join("canvas.png");
    h.state().canvas.picture_at(64, 64).save(&canvas).expect("save");
    let request =
        easel::gui::live::frame_request(&h.state().state, easel::engine::Family::Sd1).expect("request");
    assert_eq!((request.steps, request.strength, request.seed), (6, 0.5, 7));
    let out = root.path().join("generated.png");
    let res = easel_owned(&live_frame_args("a lighthouse, ink", 7, &canvas, &out));
    assert!(res.status.success(), "{}", stderr(&res));
    let frame = h.state().state.live.frame.as_ref().expect("a frame");
    assert_eq!(frame.image.as_raw(), load_rgb(&out).as_raw(), "the newest state's frame");

    // Keep: the full settings (3 steps, the model's own VAE) into the gallery, canvas as input.
    let before = h.state().state.history.items.len();
    h.get_by_role_and_label(Role::Button, "Keep").click();
    wait_until(&mut h, "the kept picture", |a| idle(a) && a.state.history.items.len() == before + 1);
    let item = h.state().state.history.items.last().cloned().expect("kept");
    assert!(item.path.is_file());
    assert_eq!((item.request.steps, item.request.seed, item.request.strength), (3, 7, 0.5));
    assert_eq!(item.request.vae, None, "the full VAE");
    let init = item.request.init_image.clone().expect("the canvas copy");
    assert_eq!(load_rgb(&init).as_raw(), load_rgb(&canvas).as_raw());
    let texts = easel::export::png::read_png_text(&item.path).expect("text");
    assert!(texts["parameters"].contains("Denoising strength: 0.5"), "{}", texts["parameters"]);
    assert!(
        h.state().state.notices.iter().any(|n| n.text.starts_with("Kept as picture")),
        "the artist is told"
    );
}
