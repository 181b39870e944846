//! The left-hand controls: model picker, prompt with trigger-word chips, the LoRA stack, sampler
//! settings, Generate / Cancel and the queue; plus the presets menu and the first-run page.

use egui::Ui;

use super::command::{Commands, UiCommand};
use super::state::{AppState, CanvasUse, JobStatus, ModelStatus};
use crate::engine::device::Precision;
use crate::engine::samplers::schedule::Spacing;
use crate::engine::SamplerKind;
use crate::worker::PreviewKind;

/// The left panel: Generate / Cancel always in view, the rest scrolls.
pub fn controls_ui(
    ui: &mut Ui,
    state: &mut AppState,
    panels: &mut super::app::Panels,
    canvas: &super::canvas::Canvas,
    out: &mut Commands,
) {
    generate_ui(ui, state, out);
    ui.separator();
    egui::ScrollArea::vertical().show(ui, |ui| {
        model_ui(ui, state, out);
        ui.separator();
        prompt_ui(ui, state);
        super::prompt_options::prompt_options_ui(ui, state);
        ui.separator();
        super::lora_panel::lora_stack_ui(ui, state, &mut panels.lora_browser, out);
        ui.separator();
        super::control_panel::control_panel_ui(ui, state, canvas, &mut panels.control, out);
        ui.separator();
        settings_ui(ui, state);
    });
}

fn model_ui(ui: &mut Ui, state: &mut AppState, out: &mut Commands) {
    ui.strong("Model");
    match &state.model {
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
        let recent = &state.settings.recent_models;
        ui.add_enabled_ui(!recent.is_empty(), |ui| {
            egui::ComboBox::from_label("Recent").selected_text("models").show_ui(ui, |ui| {
                for m in recent {
                    if ui.selectable_label(false, m).clicked() {
                        out.push(UiCommand::LoadModel(m.clone()));
                    }
                }
            });
        });
        if ui.button("Open file…").on_hover_text("A .safetensors or .ckpt checkpoint").clicked() {
            out.push(UiCommand::ChooseModelFile);
        }
        if ui
            .button("Open folder…")
            .on_hover_text("A diffusers model folder (with model_index.json)")
            .clicked()
        {
            out.push(UiCommand::ChooseModelFolder);
        }
    });
    vae_ui(ui, state, out);
    hub_pull_ui(ui, state, out);
    precision_ui(ui, state, out);
    live_preview_ui(ui, state, out);
}

/// Which autoencoder decodes: the model's own, or a standalone file (an SDXL fp16-fix VAE so
/// half precision does not need a float32 decode, or vae-ft-mse for SD 1.5).
fn vae_ui(ui: &mut Ui, state: &AppState, out: &mut Commands) {
    ui.horizontal(|ui| {
        ui.label("VAE");
        let name = match &state.settings.vae {
            Some(p) => p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            None => "the model's own".into(),
        };
        ui.label(name).on_hover_text("The autoencoder that turns latents into the picture");
        if ui.button("Choose VAE…").on_hover_text("A standalone VAE file (.safetensors, .pt)").clicked() {
            out.push(UiCommand::ChooseVae);
        }
        if state.settings.vae.is_some() && ui.button("Use the model's own").clicked() {
            out.push(UiCommand::SetVae(None));
        }
    });
}

/// How the loaded model's live previews are drawn, with the tiny decoder's download when it is
/// missing (previews are then approximate colours at an eighth of the size).
fn live_preview_ui(ui: &mut Ui, state: &AppState, out: &mut Commands) {
    let ModelStatus::Ready(m) = &state.model else {
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
        let idle = state.pull.is_none();
        if ui
            .add_enabled(idle, egui::Button::new("Get detailed previews"))
            .on_hover_text("Downloads TAESD (TAESDXL for SDXL), a tiny decoder of about 10 MB, from the Hugging Face hub")
            .clicked()
        {
            out.push(UiCommand::PullPreviewDecoder);
        }
    });
    if let Some(why) = broken {
        ui.colored_label(ui.visuals().error_fg_color, format!("The tiny decoder could not be used: {why}"));
    }
}

/// f32, f16 or bf16 weights; changing it reloads the current model.
fn precision_ui(ui: &mut Ui, state: &mut AppState, out: &mut Commands) {
    let before = state.settings.precision;
    egui::ComboBox::from_label("Precision").selected_text(before.id()).show_ui(ui, |ui| {
        for p in Precision::ALL {
            ui.selectable_value(&mut state.settings.precision, p, precision_text(p));
        }
    });
    if state.settings.precision != before && matches!(state.model, ModelStatus::Ready(_)) {
        out.push(UiCommand::ReloadModel);
    }
}

fn hub_pull_ui(ui: &mut Ui, state: &mut AppState, out: &mut Commands) {
    ui.horizontal(|ui| {
        let label = ui.label("Hub id");
        ui.add(egui::TextEdit::singleline(&mut state.settings.hub_repo).desired_width(180.0))
            .labelled_by(label.id);
        let pulling = state.pull.is_some();
        if ui
            .add_enabled(!pulling, egui::Button::new("Pull"))
            .on_hover_text("Download from Hugging Face")
            .clicked()
        {
            out.push(UiCommand::PullModel);
        }
    });
    if let Some(pull) = &state.pull {
        let fraction =
            if pull.total_bytes > 0 { pull.done_bytes as f32 / pull.total_bytes as f32 } else { 0.0 };
        ui.add(egui::ProgressBar::new(fraction).text(format!(
            "{}: {} {:.0} / {:.0} MB",
            pull.repo_id,
            pull.file,
            pull.done_bytes as f64 / 1e6,
            pull.total_bytes as f64 / 1e6
        )));
    }
}

fn prompt_ui(ui: &mut Ui, state: &mut AppState) {
    // Read the embeddings folder before counting, so an embedding counts as its vectors.
    state.embedding_names.read(&state.settings.embeddings_dir, false);
    let [prompt_count, negative_count] = &mut state.token_counts;
    let (s, names) = (&mut state.settings, &mut state.embedding_names);
    let prompt_tokens = prompt_count.count(&s.prompt, s.emphasis, s.steps, names);
    let negative_tokens = negative_count.count(&s.negative, s.emphasis, s.steps, names);
    let label = label_with_count(ui, egui::RichText::new("Prompt").strong(), &prompt_tokens);
    ui.add(
        egui::TextEdit::multiline(&mut s.prompt)
            .desired_rows(3)
            .desired_width(f32::INFINITY)
            .hint_text("What to draw"),
    )
    .labelled_by(label.id);
    // Trigger words of the stack's adapters, one click to add; a disabled adapter's are shown
    // greyed rather than hidden, so toggling one never moves the controls under the cursor.
    let mut words: Vec<(String, bool)> = Vec::new();
    for slot in &s.loras {
        if let Some(info) = state.lora_info.get(&slot.path) {
            words.extend(info.trigger_words.iter().take(6).map(|w| (w.clone(), slot.enabled)));
        }
    }
    if !words.is_empty() {
        ui.horizontal_wrapped(|ui| {
            ui.weak("Triggers:");
            for (w, enabled) in words {
                let present = s.prompt.contains(&w);
                if ui
                    .add_enabled(enabled && !present, egui::Button::new(&w).small())
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
    let label = label_with_count(ui, "Negative prompt".into(), &negative_tokens);
    ui.add(
        egui::TextEdit::multiline(&mut s.negative)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("What to avoid"),
    )
    .labelled_by(label.id);
}

/// A prompt's label with its token count beside it; the label's response, for `labelled_by`.
fn label_with_count(ui: &mut Ui, label: egui::RichText, count: &str) -> egui::Response {
    ui.horizontal(|ui| {
        let label = ui.label(label);
        ui.weak(count).on_hover_text(
            "Tokens the text encoder reads, out of the chunks of 75 they fill (past 75, the prompt takes another chunk)",
        );
        label
    })
    .inner
}

fn settings_ui(ui: &mut Ui, state: &mut AppState) {
    // The size menu offers the loaded model's family's sizes (SDXL's one-megapixel buckets).
    let family = state.model.family();
    let s = &mut state.settings;
    egui::ComboBox::from_label("Sampler").selected_text(sampler_name(s.sampler)).show_ui(ui, |ui| {
        for kind in SamplerKind::ALL {
            ui.selectable_value(&mut s.sampler, kind, sampler_name(kind));
        }
    });
    let spacing_name = |s: Option<Spacing>| s.map_or("the model's", Spacing::id);
    egui::ComboBox::from_label("Spacing")
        .selected_text(spacing_name(s.spacing))
        .show_ui(ui, |ui| {
            for choice in [None, Some(Spacing::Leading), Some(Spacing::Linspace), Some(Spacing::Trailing)] {
                ui.selectable_value(&mut s.spacing, choice, spacing_name(choice));
            }
        })
        .response
        .on_hover_text("How the steps spread over the noise levels; few-step models (Lightning, Turbo, Hyper) want trailing");
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
                for &(w, h) in family.size_presets() {
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
    if s.canvas_use == CanvasUse::Inpaint {
        ui.checkbox(&mut s.keep_unmasked, "Keep the canvas outside the mask")
            .on_hover_text("Put the canvas's own pixels back where the mask is black, as A1111 does");
    }
}

fn generate_ui(ui: &mut Ui, state: &AppState, out: &mut Commands) {
    ui.horizontal(|ui| {
        let ready = matches!(state.model, ModelStatus::Ready(_));
        let generate = ui.add_enabled(ready, egui::Button::new("Generate").min_size(egui::vec2(120.0, 32.0)));
        if generate.clicked()
            || (ready && ui.input(|i| i.key_pressed(egui::Key::Enter) && i.modifiers.command))
        {
            out.push(UiCommand::Generate);
        }
        let busy = !state.jobs.is_empty();
        if ui
            .add_enabled(busy, egui::Button::new("Cancel"))
            .on_hover_text("Stop after this step and clear the queue")
            .clicked()
        {
            out.push(UiCommand::CancelAll);
        }
    });
    if state.jobs.is_empty() {
        return;
    }
    ui.label("Queue");
    for job in &state.jobs {
        ui.horizontal(|ui| {
            if ui.small_button("×").on_hover_text("Remove from the queue").clicked() {
                out.push(UiCommand::CancelJob(job.id));
            }
            let state = match job.status {
                _ if job.is_cancelled() => "cancelling…".to_string(),
                JobStatus::Queued => "waiting".to_string(),
                JobStatus::Running { step, total, .. } => format!("{step}/{total}"),
            };
            // Truncated, so a long prompt never widens the panel.
            ui.add(egui::Label::new(format!("{} — {state}", job.label)).truncate());
        });
    }
}

/// The presets menu's own state.
#[derive(Debug, Default)]
pub struct PresetsMenu {
    /// The name to save the current settings under.
    pub name: String,
    /// The "save preset" window is open (a text field inside the menu closed it on the first click).
    pub saving: bool,
}

/// The presets menu (shipped and user presets to load, "save current settings") and the import
/// button.
pub fn presets_menu_ui(ui: &mut Ui, state: &AppState, menu: &mut PresetsMenu, out: &mut Commands) {
    ui.menu_button("Presets", |ui| {
        for name in crate::presets::names_in(&state.paths.presets()) {
            if ui.button(&name).clicked() {
                out.push(UiCommand::ApplyPreset(name));
                ui.close();
            }
        }
        ui.separator();
        if ui.button("Save current settings…").clicked() {
            menu.saving = true;
            ui.close();
        }
    });
    if menu.saving {
        save_preset_window(ui.ctx(), menu, out);
    }
    if ui
        .button("Import settings…")
        .on_hover_text("Read the settings stored in a PNG (or drop one on the window)")
        .clicked()
    {
        out.push(UiCommand::ChooseImportPicture);
    }
}

/// The window naming a new preset.
fn save_preset_window(ctx: &egui::Context, menu: &mut PresetsMenu, out: &mut Commands) {
    let mut open = true;
    egui::Window::new("Save preset")
        .open(&mut open)
        .collapsible(false)
        .anchor(egui::Align2::CENTER_TOP, egui::vec2(0.0, 80.0))
        .show(ctx, |ui| {
            ui.horizontal(|ui| {
                let label = ui.label("Name");
                let field = ui
                    .add(egui::TextEdit::singleline(&mut menu.name).desired_width(200.0))
                    .labelled_by(label.id);
                if !field.has_focus() && menu.name.is_empty() {
                    field.request_focus();
                }
                let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                let named = !menu.name.trim().is_empty();
                if ui.add_enabled(named, egui::Button::new("Save preset")).clicked() || (entered && named) {
                    out.push(UiCommand::SavePreset(menu.name.trim().to_string()));
                    menu.saving = false;
                }
            });
        });
    if !open {
        menu.saving = false;
    }
}

/// The welcome page when no model is loaded and nothing was made yet.
pub fn first_run_ui(ui: &mut Ui, out: &mut Commands) {
    ui.vertical_centered(|ui| {
        ui.add_space(80.0);
        ui.heading("Welcome to Easel");
        ui.add_space(12.0);
        ui.label(
            "Easel draws with a Stable Diffusion model: a few gigabytes of learned weights that turn your \
             prompt into a picture. Download one from the Hugging Face hub, or open one you already have: \
             SD 1.x, SD 2.x, or SDXL and its fine-tunes (Pony, Illustrious, NoobAI…).",
        );
        ui.add_space(16.0);
        if ui.button("Pull Stable Diffusion 1.5 from the hub").clicked() {
            out.push(UiCommand::PullModel);
        }
        if ui.button("Open a checkpoint file…").clicked() {
            out.push(UiCommand::ChooseModelFile);
        }
        if ui.button("Open a diffusers folder…").clicked() {
            out.push(UiCommand::ChooseModelFolder);
        }
        ui.add_space(8.0);
        ui.weak("Models already downloaded work offline. Pictures and settings stay on this computer.");
    });
}

/// A sampler as the menu (and the picture captions) name it.
pub fn sampler_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Euler => "Euler",
        SamplerKind::EulerA => "Euler a",
        SamplerKind::DpmPp2m => "DPM++ 2M",
        SamplerKind::DpmPp2mKarras => "DPM++ 2M Karras",
        SamplerKind::Ddim => "DDIM",
        SamplerKind::Lcm => "LCM",
    }
}

/// A precision as the menu offers it.
fn precision_text(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32 (exact, 4 bytes a weight)",
        Precision::F16 => "f16 (half the memory)",
        Precision::Bf16 => "bf16 (half the memory; fastest on CPUs with AVX-512 BF16)",
    }
}

#[cfg(test)]
mod tests {
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, pushed, session, session_with_model};
    use super::*;
    use crate::gui::app::Panels;
    use crate::gui::state::JobKind;

    fn controls(ui: &mut Ui, state: &mut AppState, panels: &mut Panels, out: &mut Commands) {
        let canvas = crate::gui::canvas::Canvas::new(64, 64);
        controls_ui(ui, state, panels, &canvas, out);
    }

    #[test]
    fn generate_waits_for_a_model_then_asks_for_a_render() {
        let (_dir, state) = session();
        let mut h = harness(state, Panels::default(), controls);
        h.run();
        h.get_by_label("Generate").click();
        h.run();
        assert!(pushed(&mut h).is_empty(), "a disabled button asks for nothing");
        let (_dir, state) = session_with_model();
        let mut h = harness(state, Panels::default(), controls);
        h.run();
        h.get_by_label("Generate").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::Generate]);
    }

    #[test]
    fn model_buttons_ask_for_dialogs_and_downloads_instead_of_opening_them() {
        let (_dir, state) = session();
        let mut h = harness(state, Panels::default(), controls);
        h.run();
        for (button, command) in [
            ("Open file…", UiCommand::ChooseModelFile),
            ("Open folder…", UiCommand::ChooseModelFolder),
            ("Pull", UiCommand::PullModel),
            ("Add file…", UiCommand::ChooseLoraFile),
        ] {
            h.get_by_label(button).click();
            h.run();
            assert_eq!(pushed(&mut h), [command], "{button}");
        }
        h.get_by_label("Browse…").click();
        h.run();
        assert!(
            h.state().view.lora_browser.open && pushed(&mut h).is_empty(),
            "the browser is the panel's own state"
        );
    }

    #[test]
    fn the_queue_cancels_one_job_or_all() {
        let (_dir, mut state) = session_with_model();
        let (first, _) = state.enqueue("a cat".into(), 1, JobKind::Render);
        state.enqueue("a dog".into(), 1, JobKind::Render);
        let mut h = harness(state, Panels::default(), controls);
        h.run();
        h.get_by_label("Cancel").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::CancelAll]);
        h.get_all_by_label("×").next().expect("a remove button per job").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::CancelJob(first)]);
    }

    #[test]
    fn a_preset_is_named_in_a_window_that_stays_open_while_typing() {
        let (_dir, state) = session();
        let mut h = harness(state, PresetsMenu::default(), |ui, state, menu, out| {
            presets_menu_ui(ui, state, menu, out)
        });
        h.run();
        h.get_by_label("Presets").click();
        h.run();
        h.get_by_label("Save current settings…").click();
        h.run();
        assert!(h.state().view.saving, "the naming window is open");
        h.get_by_label("Name").type_text("my ink");
        h.run();
        assert!(h.state().view.saving, "typing keeps it open");
        h.get_by_role_and_label(egui::accesskit::Role::Button, "Save preset").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::SavePreset("my ink".into())]);
        assert!(!h.state().view.saving);
    }

    #[test]
    fn the_welcome_page_offers_the_three_ways_to_a_model() {
        let mut h = harness((), (), |ui, _: &mut (), _: &mut (), out| first_run_ui(ui, out));
        h.run();
        for (button, command) in [
            ("Pull Stable Diffusion 1.5 from the hub", UiCommand::PullModel),
            ("Open a checkpoint file…", UiCommand::ChooseModelFile),
            ("Open a diffusers folder…", UiCommand::ChooseModelFolder),
        ] {
            h.get_by_label(button).click();
            h.run();
            assert_eq!(pushed(&mut h), [command], "{button}");
        }
    }
}
