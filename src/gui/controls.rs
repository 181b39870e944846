//! The left-hand controls: model picker, prompt with trigger-word chips, the LoRA stack, sampler
//! settings, Generate / Cancel and the queue; plus the presets menu and the first-run page.

use egui::Ui;

use super::app::EaselApp;
use super::state::{CanvasUse, JobStatus, ModelStatus};
use crate::engine::SamplerKind;
use crate::presets::Preset;
use crate::worker::{Command, PreviewKind};

/// Size presets offered in the size menu (width, height).
const SIZES: [(usize, usize); 7] =
    [(512, 512), (768, 768), (512, 768), (768, 512), (640, 448), (384, 384), (256, 256)];

/// The left panel: Generate / Cancel always in view, the rest scrolls.
pub fn controls_ui(app: &mut EaselApp, ui: &mut Ui) {
    generate_ui(app, ui);
    ui.separator();
    egui::ScrollArea::vertical().show(ui, |ui| scrolled_controls_ui(app, ui));
}

fn scrolled_controls_ui(app: &mut EaselApp, ui: &mut Ui) {
    model_ui(app, ui);
    ui.separator();
    prompt_ui(app, ui);
    ui.separator();
    super::lora_panel::lora_stack_ui(app, ui);
    ui.separator();
    settings_ui(app, ui);
}

fn model_ui(app: &mut EaselApp, ui: &mut Ui) {
    ui.strong("Model");
    match &app.state.model {
        ModelStatus::Ready(m) => {
            ui.label(format!("{} — {}{}", m.name, m.family, if m.inpainting { ", inpainting" } else { "" }));
        }
        ModelStatus::Loading(s) => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Loading {s}…"));
            });
        }
        ModelStatus::None => {
            ui.label("No model loaded.");
        }
    }
    ui.horizontal(|ui| {
        let recent = app.state.settings.recent_models.clone();
        let mut chosen = None;
        ui.add_enabled_ui(!recent.is_empty(), |ui| {
            egui::ComboBox::from_label("Recent").selected_text("models").show_ui(ui, |ui| {
                for m in &recent {
                    if ui.selectable_label(false, m).clicked() {
                        chosen = Some(m.clone());
                    }
                }
            });
        });
        if ui.button("Open file…").on_hover_text("A .safetensors or .ckpt checkpoint").clicked() {
            chosen =
                app.dialogs.open_file("Stable Diffusion checkpoint", &["safetensors", "ckpt"]).map(path_text);
        }
        if ui
            .button("Open folder…")
            .on_hover_text("A diffusers model folder (with model_index.json)")
            .clicked()
        {
            chosen = app.dialogs.open_folder("Diffusers model folder").map(path_text);
        }
        if let Some(m) = chosen {
            app.load_model(m);
        }
    });
    hub_pull_ui(app, ui);
    precision_ui(app, ui);
    live_preview_ui(app, ui);
}

/// How the loaded model's live previews are drawn, with the tiny decoder's download when it is
/// missing (previews are then approximate colours at an eighth of the size).
fn live_preview_ui(app: &mut EaselApp, ui: &mut Ui) {
    let ModelStatus::Ready(m) = &app.state.model else {
        return;
    };
    let broken = match &m.preview {
        PreviewKind::TinyDecoder(path) => {
            ui.label("Live preview: tiny decoder").on_hover_text(format!("TAESD from {}", path.display()));
            return;
        }
        PreviewKind::Broken(why) => Some(why.clone()),
        PreviewKind::Approximate => None,
    };
    ui.horizontal(|ui| {
        ui.label("Live preview: approximate colours");
        let idle = app.state.pull.is_none();
        if ui
            .add_enabled(idle, egui::Button::new("Get detailed previews"))
            .on_hover_text("Downloads TAESD, a tiny decoder (about 10 MB), from the Hugging Face hub")
            .clicked()
        {
            app.state.pull = Some((crate::hub::PREVIEW_DECODER_REPO.into(), "listing files".into(), 0, 0));
            app.send(Command::PullPreviewDecoder);
        }
    });
    if let Some(why) = broken {
        ui.colored_label(ui.visuals().error_fg_color, format!("The tiny decoder could not be used: {why}"));
    }
}

/// f32, f16 or bf16 weights; changing it reloads the current model.
fn precision_ui(app: &mut EaselApp, ui: &mut Ui) {
    let before = app.state.settings.dtype.clone();
    egui::ComboBox::from_label("Precision").selected_text(before.clone()).show_ui(ui, |ui| {
        ui.selectable_value(
            &mut app.state.settings.dtype,
            "f32".to_string(),
            "f32 (exact, 4 bytes a weight)",
        );
        ui.selectable_value(&mut app.state.settings.dtype, "f16".to_string(), "f16 (half the memory)");
        ui.selectable_value(
            &mut app.state.settings.dtype,
            "bf16".to_string(),
            "bf16 (half the memory; fastest on CPUs with AVX-512 BF16)",
        );
    });
    if app.state.settings.dtype != before {
        if let ModelStatus::Ready(m) = &app.state.model {
            let source = m.source.clone();
            app.load_model(source);
        }
    }
}

fn hub_pull_ui(app: &mut EaselApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        let label = ui.label("Hub id");
        ui.add(egui::TextEdit::singleline(&mut app.state.settings.hub_repo).desired_width(180.0))
            .labelled_by(label.id);
        let pulling = app.state.pull.is_some();
        if ui
            .add_enabled(!pulling, egui::Button::new("Pull"))
            .on_hover_text("Download from Hugging Face")
            .clicked()
        {
            let repo_id = app.state.settings.hub_repo.trim().to_string();
            app.state.pull = Some((repo_id.clone(), "listing files".into(), 0, 0));
            app.send(Command::PullModel { repo_id, dtype: app.state.settings.dtype.clone() });
        }
    });
    if let Some((repo, file, done, total)) = &app.state.pull {
        let fraction = if *total > 0 { *done as f32 / *total as f32 } else { 0.0 };
        ui.add(egui::ProgressBar::new(fraction).text(format!(
            "{repo}: {file} {:.0} / {:.0} MB",
            *done as f64 / 1e6,
            *total as f64 / 1e6
        )));
    }
}

fn prompt_ui(app: &mut EaselApp, ui: &mut Ui) {
    let s = &mut app.state.settings;
    let label = ui.strong("Prompt");
    ui.add(
        egui::TextEdit::multiline(&mut s.prompt)
            .desired_rows(3)
            .desired_width(f32::INFINITY)
            .hint_text("What to draw"),
    )
    .labelled_by(label.id);
    // Trigger words of active adapters, one click to add.
    let mut words: Vec<String> = Vec::new();
    for slot in s.loras.iter().filter(|l| l.enabled) {
        if let Some(info) = app.state.lora_info.get(&slot.path) {
            words.extend(info.trigger_words.iter().take(6).cloned());
        }
    }
    if !words.is_empty() {
        ui.horizontal_wrapped(|ui| {
            ui.weak("Triggers:");
            for w in words {
                let present = s.prompt.contains(&w);
                if ui
                    .add_enabled(!present, egui::Button::new(&w).small())
                    .on_hover_text("Add to the prompt")
                    .clicked()
                {
                    if !s.prompt.trim().is_empty() {
                        s.prompt.push_str(", ");
                    }
                    s.prompt.push_str(&w);
                }
            }
        });
    }
    let label = ui.label("Negative prompt");
    ui.add(
        egui::TextEdit::multiline(&mut s.negative)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("What to avoid"),
    )
    .labelled_by(label.id);
}

fn settings_ui(app: &mut EaselApp, ui: &mut Ui) {
    let s = &mut app.state.settings;
    egui::ComboBox::from_label("Sampler").selected_text(sampler_name(s.sampler)).show_ui(ui, |ui| {
        for kind in SamplerKind::ALL {
            ui.selectable_value(&mut s.sampler, kind, sampler_name(kind));
        }
    });
    ui.add(egui::Slider::new(&mut s.steps, 1..=150).text("Steps"));
    ui.add(egui::Slider::new(&mut s.cfg_scale, 0.0..=20.0).step_by(0.5).text("CFG"))
        .on_hover_text("Guidance; 1 or less turns it off");
    ui.horizontal(|ui| {
        let label = ui.label("Seed");
        ui.add(egui::DragValue::new(&mut s.seed).range(0..=u32::MAX as u64)).labelled_by(label.id);
        if ui.button("Random").on_hover_text("New random seed").clicked() {
            s.seed = crate::engine::request::random_seed();
        }
        ui.checkbox(&mut s.seed_locked, "Lock")
            .on_hover_text("Keep this seed; unlocked, each run draws a new one");
    });
    ui.horizontal(|ui| {
        egui::ComboBox::from_label("Size").selected_text(format!("{}×{}", s.width, s.height)).show_ui(
            ui,
            |ui| {
                for (w, h) in SIZES {
                    if ui.selectable_label(s.width == w && s.height == h, format!("{w}×{h}")).clicked() {
                        (s.width, s.height) = (w, h);
                    }
                }
            },
        );
        let label = ui.label("W");
        ui.add(egui::DragValue::new(&mut s.width).range(64..=2048).speed(8)).labelled_by(label.id);
        let label = ui.label("H");
        ui.add(egui::DragValue::new(&mut s.height).range(64..=2048).speed(8)).labelled_by(label.id);
        s.width = s.width / 8 * 8;
        s.height = s.height / 8 * 8;
    });
    ui.horizontal(|ui| {
        let label = ui.label("Batch");
        ui.add(egui::DragValue::new(&mut s.batch).range(1..=16)).labelled_by(label.id);
    });
    ui.horizontal(|ui| {
        ui.label("Start from");
        ui.selectable_value(&mut s.canvas_use, CanvasUse::Off, "Noise");
        ui.selectable_value(&mut s.canvas_use, CanvasUse::Img2Img, "Canvas (img2img)");
        ui.selectable_value(&mut s.canvas_use, CanvasUse::Inpaint, "Inpaint");
    });
    if s.canvas_use != CanvasUse::Off {
        ui.add(egui::Slider::new(&mut s.strength, 0.05..=1.0).text("Strength"))
            .on_hover_text("How far to move from the canvas");
    }
}

fn generate_ui(app: &mut EaselApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        let ready = matches!(app.state.model, ModelStatus::Ready(_));
        let generate = ui.add_enabled(ready, egui::Button::new("Generate").min_size(egui::vec2(120.0, 32.0)));
        if generate.clicked()
            || (ready && ui.input(|i| i.key_pressed(egui::Key::Enter) && i.modifiers.command))
        {
            app.generate();
        }
        let busy = !app.state.jobs.is_empty();
        if ui
            .add_enabled(busy, egui::Button::new("Cancel"))
            .on_hover_text("Stop after this step and clear the queue")
            .clicked()
        {
            app.state.cancel_all();
        }
    });
    if app.state.jobs.is_empty() {
        return;
    }
    ui.label("Queue");
    let mut cancel = None;
    for job in &app.state.jobs {
        ui.horizontal(|ui| {
            if ui.small_button("×").on_hover_text("Remove from the queue").clicked() {
                cancel = Some(job.id);
            }
            let state = match job.status {
                JobStatus::Queued => "waiting".to_string(),
                JobStatus::Running { step, total, .. } => format!("{step}/{total}"),
            };
            ui.label(format!("{} — {state}", job.label));
        });
    }
    if let Some(id) = cancel {
        app.state.cancel_job(id);
    }
}

/// The presets menu: shipped and user presets to load, and "save current settings".
pub fn presets_menu_ui(app: &mut EaselApp, ui: &mut Ui) {
    let dir = app.state.paths.presets();
    ui.menu_button("Presets", |ui| {
        for name in crate::presets::names_in(&dir) {
            if ui.button(&name).clicked() {
                match crate::presets::load_from(&dir, &name) {
                    Ok(p) => apply_preset(app, &p),
                    Err(e) => app.state.error(e.to_string()),
                }
                ui.close();
            }
        }
        ui.separator();
        ui.horizontal(|ui| {
            let label = ui.label("Name");
            ui.add(egui::TextEdit::singleline(&mut app.preset_name).desired_width(120.0))
                .labelled_by(label.id);
            if ui.button("Save preset").clicked() {
                let preset = current_preset(app);
                match crate::presets::save(&dir, &app.preset_name, &preset, false) {
                    Ok(path) => app.state.info(format!("Saved the preset {}", path.display())),
                    Err(e) => app.state.error(e.to_string()),
                }
                ui.close();
            }
        });
    });
    if ui
        .button("Import settings…")
        .on_hover_text("Read the settings stored in a PNG (or drop one on the window)")
        .clicked()
    {
        if let Some(path) = app.dialogs.open_file("Picture with settings", &["png"]) {
            app.import_settings(&path);
        }
    }
}

fn current_preset(app: &EaselApp) -> Preset {
    let s = &app.state.settings;
    Preset {
        name: app.preset_name.clone(),
        description: format!(
            "Saved from Easel: {} steps, CFG {}, {}×{}",
            s.steps, s.cfg_scale, s.width, s.height
        ),
        sampler: Some(s.sampler),
        steps: Some(s.steps),
        cfg_scale: Some(s.cfg_scale),
        width: Some(s.width),
        height: Some(s.height),
        negative_prompt: Some(s.negative.clone()),
        prompt: Some(s.prompt.clone()),
        loras: s.loras.iter().filter(|l| l.enabled).map(|l| l.spec()).collect(),
    }
}

fn apply_preset(app: &mut EaselApp, p: &Preset) {
    let s = &mut app.state.settings;
    if let Some(v) = p.sampler {
        s.sampler = v;
    }
    if let Some(v) = p.steps {
        s.steps = v;
    }
    if let Some(v) = p.cfg_scale {
        s.cfg_scale = v;
    }
    if let Some(v) = p.width {
        s.width = v;
    }
    if let Some(v) = p.height {
        s.height = v;
    }
    if let Some(v) = &p.negative_prompt {
        s.negative = v.clone();
    }
    if let Some(v) = &p.prompt {
        s.prompt = v.clone();
    }
    if !p.loras.is_empty() {
        s.loras = p.loras.iter().map(super::state::LoraSlot::from_spec).collect();
        for spec in &p.loras {
            app.send(Command::InspectLora { path: spec.path.clone() });
        }
    }
    app.state.info(format!("Preset {} applied", p.name));
}

/// The welcome page when no model is loaded and nothing was made yet.
pub fn first_run_ui(app: &mut EaselApp, ui: &mut Ui) {
    ui.vertical_centered(|ui| {
        ui.add_space(80.0);
        ui.heading("Welcome to Easel");
        ui.add_space(12.0);
        ui.label(
            "Easel draws with a Stable Diffusion model: a few gigabytes of learned weights that turn your \
             prompt into a picture. Download one from the Hugging Face hub, or open one you already have.",
        );
        ui.add_space(16.0);
        if ui.button("Pull Stable Diffusion 1.5 from the hub").clicked() {
            let repo_id = app.state.settings.hub_repo.trim().to_string();
            app.state.pull = Some((repo_id.clone(), "listing files".into(), 0, 0));
            app.send(Command::PullModel { repo_id, dtype: app.state.settings.dtype.clone() });
        }
        if ui.button("Open a checkpoint file…").clicked() {
            if let Some(p) = app.dialogs.open_file("Stable Diffusion checkpoint", &["safetensors", "ckpt"]) {
                app.load_model(path_text(p));
            }
        }
        if ui.button("Open a diffusers folder…").clicked() {
            if let Some(p) = app.dialogs.open_folder("Diffusers model folder") {
                app.load_model(path_text(p));
            }
        }
        ui.add_space(8.0);
        ui.weak("Models already downloaded work offline. Pictures and settings stay on this computer.");
    });
}

fn sampler_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Euler => "Euler",
        SamplerKind::EulerA => "Euler a",
        SamplerKind::DpmPp2m => "DPM++ 2M",
        SamplerKind::DpmPp2mKarras => "DPM++ 2M Karras",
        SamplerKind::Ddim => "DDIM",
        SamplerKind::Lcm => "LCM",
    }
}

fn path_text(p: std::path::PathBuf) -> String {
    p.display().to_string()
}
