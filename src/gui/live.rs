//! Live painting in the studio: with Live on, the Canvas tab shows the canvas and a rendered
//! frame side by side. Whenever the canvas, the prompt, the stack or a live setting changes, the
//! frame in flight is cancelled at once (it is stale) and, after a short pause with no further
//! change, a new one is asked for: the newest state always wins and nothing queues behind the
//! brush. Frames are img2img renders of the canvas with a few-step preset, the tiny autoencoder
//! and the seed as it stands; "Keep" renders the same canvas with the full settings into the
//! gallery.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{TextureHandle, Ui};
use serde::{Deserialize, Serialize};

use super::app::EaselApp;
use super::command::{Commands, UiCommand};
use super::state::{AppState, ModelStatus};
use crate::engine::live::{FrameTimings, LivePreset, LIVE_PRESETS};
use crate::engine::{Family, GenerationRequest, LoraSpec};
use crate::worker::{Command, FrameDone, JobId, JobOutcome, LiveJob};

/// Live painting's settings, kept between sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveSettings {
    /// The live preset's id (empty: the model family's default).
    pub preset: String,
    /// How much of the schedule a frame runs over the canvas (0–1].
    pub strength: f64,
    /// Seconds without a change before a frame is asked for.
    pub pause_secs: f64,
    /// A few-step LoRA added to the stack for live frames only (LCM, Hyper-SD, Lightning).
    pub lora: Option<PathBuf>,
    /// Its weight.
    pub lora_weight: f64,
    /// The tiny autoencoder (TAESD) frames use; unset: the family's, found in models/ or the hub
    /// cache.
    pub autoencoder: Option<PathBuf>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            preset: String::new(),
            strength: 0.5,
            pause_secs: 0.25,
            lora: None,
            lora_weight: 1.0,
            autoencoder: None,
        }
    }
}

impl LiveSettings {
    /// The preset in use for a model of `family`.
    pub fn preset(&self, family: Family) -> &'static LivePreset {
        LivePreset::by_id(&self.preset, family)
    }
}

/// The frame on show.
pub struct ShownFrame {
    /// Its id.
    pub id: JobId,
    /// The picture.
    pub image: image::RgbImage,
    /// Where its render's time went.
    pub timings: FrameTimings,
    /// Seconds from the request to its arrival.
    pub latency_secs: f64,
    /// Its texture, made on the first frame that draws it.
    pub texture: Option<TextureHandle>,
}

/// A frame asked for and not yet back.
struct InFlight {
    id: JobId,
    key: String,
    cancel: Arc<AtomicBool>,
}

/// Live painting during this session (not saved).
#[derive(Default)]
pub struct LiveSession {
    /// Live mode is on.
    pub on: bool,
    /// The state last seen (canvas version and request), and when it last changed.
    seen: Option<(String, Instant)>,
    in_flight: Option<InFlight>,
    /// The state the frame on show (or the last failure) is of: no new frame is asked for it.
    done_key: Option<String>,
    /// The newest frame.
    pub frame: Option<ShownFrame>,
    /// Why no frame can be made now, in a sentence.
    pub problem: Option<String>,
    /// Frames cancelled because the state moved on (for the status line and tests).
    pub cancelled: usize,
}

impl LiveSession {
    /// Whether a frame is being rendered (or waits for the worker).
    pub fn rendering(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the frame on show is of the state as it is now (not of an older canvas).
    pub fn is_current(&self) -> bool {
        match (&self.done_key, &self.seen) {
            (Some(done), Some((seen, _))) => done == seen,
            _ => false,
        }
    }

    /// Takes in a finished frame; one of a state that has moved on is dropped.
    pub fn frame_arrived(&mut self, done: FrameDone) {
        let Some(flight) = self.in_flight.take_if(|f| f.id == done.id) else { return };
        self.done_key = Some(flight.key);
        self.problem = None;
        self.frame = Some(ShownFrame {
            id: done.id,
            image: done.image,
            timings: done.timings,
            latency_secs: done.latency_secs,
            texture: None,
        });
    }

    /// Takes in a frame that was cancelled or failed.
    pub fn stopped(&mut self, id: JobId, outcome: JobOutcome) {
        let Some(flight) = self.in_flight.take_if(|f| f.id == id) else { return };
        if let JobOutcome::Failed(message) = outcome {
            // Not asked again until something changes: the same state would fail the same way.
            self.done_key = Some(flight.key);
            self.problem = Some(format!("The live frame failed: {message}"));
        }
    }

    /// Cancels the frame in flight, if any (live mode turned off, the worker restarted).
    pub fn cancel(&mut self) {
        if let Some(flight) = self.in_flight.take() {
            flight.cancel.store(true, Ordering::SeqCst);
            self.cancelled += 1;
        }
    }
}

/// The request a live frame of the current settings is: one img2img picture of the canvas with
/// the live preset, the live strength, the live LoRA on top of the stack and the tiny autoencoder.
pub fn frame_request(state: &AppState, family: Family) -> Result<GenerationRequest, String> {
    let live = &state.settings.live;
    let mut request = state.settings.request();
    live.preset(family).apply(&mut request);
    request.batch = 1;
    request.strength = live.strength;
    // A low strength of a short schedule would leave no step to run: lengthen the schedule until
    // one step is left, as Krita does (the frame stays as quick; its step is a smaller one).
    while (request.steps as f64 * request.strength).floor() < 1.0 && request.steps < 1000 {
        request.steps += 1;
    }
    request.keep_unmasked = false;
    let autoencoder = live.autoencoder.clone().or_else(|| crate::hub::find_preview_decoder(family));
    request.vae = Some(autoencoder.ok_or_else(|| {
        format!(
            "Live painting encodes and decodes with the tiny autoencoder, which is not on this computer: \
             press “Pull {}” (about 10 MB), or copy {}'s folder into models/{}",
            crate::hub::preview_decoder_name(family),
            crate::hub::preview_decoder_repo(family),
            crate::hub::preview_decoder_name(family),
        )
    })?);
    if let Some(path) = &live.lora {
        let name = path.file_stem().map_or("live".into(), |s| s.to_string_lossy().to_string());
        let weight = live.lora_weight;
        request.loras.push(LoraSpec { name, path: path.clone(), unet_weight: weight, text_weight: weight });
    }
    request.validate().map_err(|e| e.in_studio_words())?;
    Ok(request)
}

impl EaselApp {
    /// Once a frame: notices a changed state (cancelling the stale frame), and asks for a new
    /// frame once the state has been still for the pause. Frames are made only while the Canvas
    /// tab shows them.
    pub(super) fn live_tick(&mut self, ctx: &egui::Context) {
        let live = &mut self.state.live;
        if !live.on {
            return;
        }
        if self.state.settings.tab != super::state::Tab::Canvas {
            live.cancel();
            return;
        }
        if let Some(frame) = live.frame.as_mut().filter(|f| f.texture.is_none()) {
            let image = super::textures::color_image(&frame.image);
            frame.texture = Some(ctx.load_texture("live frame", image, egui::TextureOptions::LINEAR));
        }
        let ModelStatus::Ready(info) = &self.state.model else {
            self.state.live.problem = Some("Open a model to paint live.".into());
            return;
        };
        let request = match frame_request(&self.state, info.family) {
            Ok(r) => r,
            Err(problem) => {
                self.state.live.problem = Some(problem);
                return;
            }
        };
        let json = serde_json::to_string(&request).unwrap_or_default();
        let (w, h) = self.canvas.size_px();
        let key = format!("{}|{w}×{h}|{json}", self.canvas.version());
        let live = &mut self.state.live;
        if live.seen.as_ref().is_none_or(|(k, _)| *k != key) {
            live.seen = Some((key.clone(), Instant::now()));
            if live.in_flight.as_ref().is_some_and(|f| f.key != key) {
                live.cancel();
            }
            if live.done_key.as_ref() != Some(&key) {
                live.problem = None;
            }
        }
        if self.canvas.is_stroking() {
            // The release comes with an event of its own; look again a pause after it.
            ctx.request_repaint_after(Duration::from_secs_f64(
                self.state.settings.live.pause_secs.clamp(0.0, 5.0),
            ));
            return;
        }
        if live.in_flight.is_some() || live.done_key.as_ref() == Some(&key) {
            return;
        }
        let still = live.seen.as_ref().map_or(Duration::ZERO, |(_, at)| at.elapsed());
        let pause = Duration::from_secs_f64(self.state.settings.live.pause_secs.clamp(0.0, 5.0));
        if still < pause {
            ctx.request_repaint_after(pause - still);
            return;
        }
        let canvas = self.canvas.picture_at(request.width as u32, request.height as u32);
        let id = self.state.next_id();
        let cancel = Arc::new(AtomicBool::new(false));
        self.state.live.in_flight = Some(InFlight { id, key, cancel: Arc::clone(&cancel) });
        let job = LiveJob { id, request, canvas, cancel, asked: Instant::now() };
        self.send(Command::Live(Box::new(job)));
    }

    /// Renders the canvas with the full settings into the gallery: the main sampler, steps,
    /// guidance, autoencoder and stack (no live LoRA), the live strength and seed, and the canvas
    /// saved as the start picture.
    pub(super) fn keep_live(&mut self) {
        if !matches!(self.state.model, ModelStatus::Ready(_)) {
            self.state.error("Open a model first: choose a file or folder, or pull one from the hub.");
            return;
        }
        let settings = &self.state.settings;
        let mut request = settings.request();
        request.batch = 1;
        request.strength = settings.live.strength;
        let inpaint = settings.canvas_use == super::state::CanvasUse::Inpaint;
        request.keep_unmasked = inpaint && settings.keep_unmasked;
        let saved_prompt = settings.saved_prompt();
        let (w, h) = (request.width as u32, request.height as u32);
        match self.canvas.inputs(&self.state.paths.inputs(), w, h) {
            Ok(inputs) => {
                request.init_image = Some(inputs.image_path.clone());
                for unit in request.controls.iter_mut().filter(|u| u.image.is_none()) {
                    unit.image = Some(inputs.image_path.clone());
                }
                let mask = inpaint.then(|| {
                    request.mask = Some(inputs.mask_path.clone());
                    inputs.mask.clone()
                });
                if let Err(e) = request.validate() {
                    return self.state.error(e.in_studio_words());
                }
                let label = format!("keep: {}", super::run::job_label(&request.prompt, 1, request.seed));
                let (id, cancel) = self.state.enqueue(label, 1, super::state::JobKind::Keep);
                let output_dir = self.state.paths.gallery();
                self.send(Command::Generate(Box::new(crate::worker::GenerateJob {
                    id,
                    request,
                    saved_prompt,
                    init_image: Some(inputs.image),
                    mask,
                    cancel,
                    output_dir,
                })));
            }
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }
}

/// The live row of the Canvas tab: preset, strength, live LoRA, pause, Keep, and what is
/// happening.
pub fn live_bar_ui(ui: &mut Ui, state: &mut AppState, out: &mut Commands) {
    let family = state.model.family();
    let live = &mut state.settings.live;
    ui.horizontal_wrapped(|ui| {
        let preset = live.preset(family);
        let label = ui.label("Live preset");
        // Fixed widths and decimals: the sliders beside must not shift as values change.
        egui::ComboBox::from_id_salt("live preset")
            .width(230.0)
            .selected_text(preset.name)
            .show_ui(ui, |ui| {
                for p in LIVE_PRESETS.iter().filter(|p| p.fits(family)) {
                    let chosen = ui.selectable_label(p.id == preset.id, p.name).on_hover_text(p.needs);
                    if chosen.clicked() {
                        live.preset = p.id.to_string();
                    }
                }
            })
            .response
            .labelled_by(label.id)
            .on_hover_text(format!(
                "{} steps × strength, guidance {}, {}. Needs {}",
                preset.steps,
                preset.cfg_scale,
                preset.sampler.id(),
                preset.needs
            ));
        ui.add(egui::Slider::new(&mut live.strength, 0.05..=1.0).fixed_decimals(2).text("Strength")).on_hover_text(
            "How far a frame may move from the canvas: low keeps your drawing, high lets the model repaint it",
        );
        ui.add(egui::Slider::new(&mut live.pause_secs, 0.0..=2.0).fixed_decimals(2).suffix(" s").text("Pause"))
            .on_hover_text("How long the canvas must stay still before a new frame is rendered");
    });
    ui.horizontal_wrapped(|ui| {
        match &live.lora {
            Some(path) => {
                let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().to_string());
                ui.label(format!("Live LoRA: {name}"));
                ui.add(egui::Slider::new(&mut live.lora_weight, 0.0..=1.5).fixed_decimals(2).text("Weight"));
                if ui.small_button("×").on_hover_text("Render live frames without it").clicked() {
                    live.lora = None;
                }
            }
            None => {
                if ui
                    .button("Live LoRA…")
                    .on_hover_text("A few-step LoRA for live frames only (Hyper-SD, LCM, Lightning)")
                    .clicked()
                {
                    out.push(UiCommand::ChooseLiveLora);
                }
                if let Some((repo, file)) = live.preset(family).lora_for(family) {
                    let downloading = state.pull.is_some();
                    // diffusers-format repositories name every file alike; their name says more.
                    let name = match file.strip_suffix(".safetensors") {
                        Some("pytorch_lora_weights") | None => repo.rsplit('/').next().unwrap_or(repo),
                        Some(stem) => stem,
                    };
                    let get = ui
                        .add_enabled(!downloading, egui::Button::new(format!("Get {name}")))
                        .on_hover_text(format!(
                            "The preset's LoRA, from {repo} on the Hugging Face hub (downloaded once)"
                        ));
                    if get.clicked() {
                        out.push(UiCommand::GetLiveLora(repo.to_string(), file.to_string()));
                    }
                    ui.weak("(without it, frames are rough)");
                }
            }
        }
        ui.separator();
        let keep = ui
            .add_enabled(matches!(state.model, ModelStatus::Ready(_)), egui::Button::new("Keep"))
            .on_hover_text(
                "Render this canvas into the gallery with the left panel's sampler, steps, guidance, VAE and stack \
                 (without the live LoRA), at the live strength and seed",
            );
        if keep.clicked() {
            out.push(UiCommand::KeepLive);
        }
    });
    status_ui(ui, state, out);
}

fn status_ui(ui: &mut Ui, state: &AppState, out: &mut Commands) {
    let live = &state.live;
    if let Some(problem) = &live.problem {
        ui.horizontal_wrapped(|ui| {
            ui.colored_label(ui.visuals().error_fg_color, problem);
            if problem.contains("tiny autoencoder") && state.pull.is_none() {
                let name = crate::hub::preview_decoder_name(state.model.family());
                if ui.button(format!("Pull {name}")).clicked() {
                    out.push(UiCommand::PullPreviewDecoder);
                }
            }
        });
    } else if live.rendering() {
        let waiting = !state.jobs.is_empty();
        ui.weak(if waiting {
            "Live frame waits for the render queue…"
        } else {
            "Rendering the live frame…"
        });
    } else if live.frame.is_some() && !live.is_current() {
        ui.weak("Changed: a new frame follows once the canvas is still.");
    } else if let Some(frame) = &live.frame {
        let t = &frame.timings;
        let waited = frame.latency_secs - t.total_secs;
        let queue =
            if waited > 0.1 { format!(", after {waited:.1} s in the render queue") } else { String::new() };
        ui.weak(format!(
            "Frame in {:.2} s: {} steps {:.2} s, encode {:.3} s, decode {:.3} s{queue}",
            t.total_secs, t.steps, t.denoise_secs, t.encode_secs, t.decode_secs
        ));
    } else {
        ui.weak("Draw: a frame appears on the right a moment after you stop.");
    }
}

/// The live frame, scaled like the canvas beside it.
pub fn frame_ui(ui: &mut Ui, state: &AppState, canvas_px: (u32, u32)) {
    let avail = ui.available_size();
    let (w, h) = match &state.live.frame {
        Some(f) => (f.image.width() as f32, f.image.height() as f32),
        None => (canvas_px.0 as f32, canvas_px.1 as f32),
    };
    let scale = (avail.x / w).min(avail.y / h).clamp(0.05, 8.0);
    let (rect, response) = ui.allocate_exact_size(egui::vec2(w, h) * scale, egui::Sense::hover());
    match state.live.frame.as_ref().and_then(|f| f.texture.as_ref()) {
        Some(texture) => {
            let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            ui.painter().image(texture.id(), rect, uv, egui::Color32::WHITE);
        }
        None => {
            ui.painter().rect_filled(rect, 4.0, ui.visuals().faint_bg_color);
            let hint = if state.live.rendering() { "Rendering…" } else { "The live frame appears here" };
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                hint,
                egui::FontId::proportional(14.0),
                ui.visuals().weak_text_color(),
            );
        }
    }
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Live frame"));
}

#[cfg(test)]
mod tests {
    use super::super::test_support::session;
    use super::*;

    #[test]
    fn a_frame_request_always_leaves_a_step_and_adds_the_live_lora() {
        let (dir, mut state) = session();
        state.settings.live.autoencoder = Some(dir.path().join("taesd"));
        state.settings.live.preset = "lcm".into();
        state.settings.live.strength = 0.05;
        state.settings.live.lora = Some(dir.path().join("lcm.safetensors"));
        let request = frame_request(&state, Family::Sd1).expect("a request");
        assert_eq!((request.sampler, request.batch), (crate::engine::SamplerKind::Lcm, 1));
        assert_eq!(request.steps, 20, "the shortest schedule whose 5 % is a step");
        assert_eq!(request.loras.last().map(|l| l.name.as_str()), Some("lcm"));
        assert_eq!(request.vae, state.settings.live.autoencoder);
        state.settings.live.strength = 0.5;
        assert_eq!(frame_request(&state, Family::Sd1).expect("a request").steps, 6);
    }
}
