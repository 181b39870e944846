//! The studio's state, apart from any window: what persists between runs (`Settings`) and what
//! the current session knows (`AppState`). Worker events enter only through [`AppState::apply`],
//! so every reaction to the engine can be tested without a window.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::engine::device::Precision;
use crate::engine::lora::{tags, AdapterReport};
use crate::engine::{GenerationRequest, LoraSpec, SamplerKind};
use crate::history::History;
use crate::paths::Paths;
use crate::worker::{EvalResults, Event, JobId, JobOutcome, LoraInfo, ModelInfo};

/// The tab shown in the middle of the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    /// The current picture or live preview.
    #[default]
    Image,
    /// Every result so far.
    Gallery,
    /// A/B and LoRA × weight × seed grids.
    Compare,
    /// FID/KID/IS/PSNR/SSIM per configuration.
    Metrics,
    /// Sketching and masks.
    Canvas,
}

/// One adapter in the stack panel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSlot {
    /// The file.
    pub path: PathBuf,
    /// Name used in tags (file stem).
    pub name: String,
    /// Off: kept in the stack but not merged.
    pub enabled: bool,
    /// The weight of both parts, unless `separate`.
    pub weight: f64,
    /// Separate UNet and text-encoder weights.
    pub separate: bool,
    /// UNet weight when `separate`.
    pub unet_weight: f64,
    /// Text-encoder weight when `separate`.
    pub text_weight: f64,
}

impl LoraSlot {
    /// A new enabled slot at weight 1.
    pub fn new(path: PathBuf) -> Self {
        let name = path.file_stem().map_or("lora".into(), |s| s.to_string_lossy().to_string());
        Self { path, name, enabled: true, weight: 1.0, separate: false, unet_weight: 1.0, text_weight: 1.0 }
    }

    /// The engine's description of this slot.
    pub fn spec(&self) -> LoraSpec {
        let (unet_weight, text_weight) =
            if self.separate { (self.unet_weight, self.text_weight) } else { (self.weight, self.weight) };
        LoraSpec { name: self.name.clone(), path: self.path.clone(), unet_weight, text_weight }
    }
}

/// How the canvas feeds the next generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanvasUse {
    /// Not at all (txt2img).
    #[default]
    Off,
    /// As the img2img start picture.
    Img2Img,
    /// As the picture to inpaint, with the painted mask.
    Inpaint,
}

/// The metrics form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsForm {
    /// Reference pictures.
    pub reference_dir: String,
    /// A prompt list file; empty: captions beside the references, or the main prompt.
    pub prompt_file: String,
    /// Use `name.txt` captions beside the references.
    pub use_captions: bool,
    /// Pictures per configuration.
    pub images_per_config: usize,
    /// Include the base model.
    pub include_base: bool,
    /// Include the current stack.
    pub include_stack: bool,
    /// Sweep the first enabled adapter over these weights (comma-separated; empty: no sweep).
    pub sweep_weights: String,
    /// FID Inception weights.
    pub inception: String,
}

impl Default for MetricsForm {
    fn default() -> Self {
        Self {
            reference_dir: String::new(),
            prompt_file: String::new(),
            use_captions: false,
            images_per_config: 8,
            include_base: true,
            include_stack: true,
            sweep_weights: String::new(),
            inception: format!("models/{}", crate::metrics::inception::WEIGHTS_FILE),
        }
    }
}

/// What persists between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// Sampler.
    pub sampler: SamplerKind,
    /// Steps.
    pub steps: usize,
    /// Guidance.
    pub cfg_scale: f64,
    /// Seed of the next run.
    pub seed: u64,
    /// Keep the seed; otherwise each run draws a new one.
    pub seed_locked: bool,
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Pictures per click.
    pub batch: usize,
    /// img2img strength.
    pub strength: f64,
    /// How the canvas is used.
    pub canvas_use: CanvasUse,
    /// Inpainting keeps the canvas's own pixels outside the mask.
    pub keep_unmasked: bool,
    /// The LoRA stack.
    pub loras: Vec<LoraSlot>,
    /// Where the LoRA browser looks.
    pub lora_dir: String,
    /// Models opened before, most recent first.
    pub recent_models: Vec<String>,
    /// The hub id typed in the pull field.
    pub hub_repo: String,
    /// The weights' precision (called `dtype` in settings saved before it was typed).
    #[serde(alias = "dtype")]
    pub precision: Precision,
    /// The middle tab.
    pub tab: Tab,
    /// The metrics form.
    pub metrics: MetricsForm,
    /// Grid weights (comma-separated).
    pub grid_weights: String,
    /// Seeds per grid row.
    pub grid_seeds: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let r = GenerationRequest::default();
        Self {
            prompt: String::new(),
            negative: String::new(),
            sampler: r.sampler,
            steps: r.steps,
            cfg_scale: r.cfg_scale,
            seed: 1,
            seed_locked: false,
            width: r.width,
            height: r.height,
            batch: 1,
            strength: r.strength,
            canvas_use: CanvasUse::Off,
            keep_unmasked: true,
            loras: Vec::new(),
            lora_dir: "models/lora".into(),
            recent_models: Vec::new(),
            hub_repo: "stable-diffusion-v1-5/stable-diffusion-v1-5".into(),
            precision: Precision::default(),
            tab: Tab::Image,
            metrics: MetricsForm::default(),
            grid_weights: "0, 0.25, 0.5, 0.75, 1".into(),
            grid_seeds: 2,
        }
    }
}

impl Settings {
    /// The request the controls describe (without canvas inputs).
    pub fn request(&self) -> GenerationRequest {
        GenerationRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative.clone(),
            sampler: self.sampler,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            seed: self.seed,
            width: self.width,
            height: self.height,
            batch: self.batch,
            strength: self.strength,
            loras: self.loras.iter().filter(|s| s.enabled).map(LoraSlot::spec).collect(),
            keep_unmasked: self.canvas_use == CanvasUse::Inpaint && self.keep_unmasked,
            ..Default::default()
        }
    }

    /// The prompt as saved in PNGs: the text plus a tag per enabled adapter, so A1111 and Easel
    /// rebuild the stack from it.
    pub fn saved_prompt(&self) -> String {
        tags::prompt_with_tags(&self.prompt, &self.request().loras)
    }

    /// Takes a preset's settings: what it names replaces the current value, the rest stays.
    pub fn apply_preset(&mut self, preset: &crate::presets::Preset) {
        let r = crate::job::with_preset(self.request(), preset);
        self.take_prompt_and_sampling(&r);
        if !preset.loras.is_empty() {
            self.loras = preset.loras.iter().map(LoraSlot::from_spec).collect();
        }
    }

    /// The prompts, sampler, steps, guidance and size of `r`.
    fn take_prompt_and_sampling(&mut self, r: &GenerationRequest) {
        self.prompt = r.prompt.clone();
        self.negative = r.negative_prompt.clone();
        self.sampler = r.sampler;
        self.steps = r.steps;
        self.cfg_scale = r.cfg_scale;
        self.width = r.width;
        self.height = r.height;
    }

    /// Takes over an imported or historical request's settings (not its inputs).
    pub fn use_request(&mut self, r: &GenerationRequest) {
        self.take_prompt_and_sampling(r);
        self.prompt = tags::strip_tags(&r.prompt).trim().to_string();
        self.seed = r.seed;
        self.seed_locked = true;
        self.strength = r.strength;
        if !r.loras.is_empty() {
            self.loras = r.loras.iter().map(LoraSlot::from_spec).collect();
        } else if let Ok(found) = tags::parse_tags(&r.prompt) {
            // A1111 pictures name their adapters in the prompt; find them in the LoRA folder.
            let dir = PathBuf::from(&self.lora_dir);
            let slots: Vec<LoraSlot> = found
                .into_iter()
                .map(|t| LoraSpec {
                    path: dir.join(format!("{}.safetensors", t.name)),
                    name: t.name,
                    unet_weight: t.unet_weight,
                    text_weight: t.text_weight,
                })
                .map(|s| LoraSlot::from_spec(&s))
                .collect();
            if !slots.is_empty() {
                self.loras = slots;
            }
        }
    }

    /// Remembers a model at the top of the recent list.
    pub fn remember_model(&mut self, source: &str) {
        self.recent_models.retain(|m| m != source);
        self.recent_models.insert(0, source.to_string());
        self.recent_models.truncate(8);
    }
}

impl LoraSlot {
    /// An enabled slot with a spec's weights (separate when they differ).
    pub fn from_spec(s: &LoraSpec) -> Self {
        LoraSlot {
            path: s.path.clone(),
            name: s.name.clone(),
            enabled: true,
            weight: s.unet_weight,
            separate: s.unet_weight != s.text_weight,
            unet_weight: s.unet_weight,
            text_weight: s.text_weight,
        }
    }
}

/// The model as the window knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ModelStatus {
    /// Nothing loaded yet.
    #[default]
    None,
    /// A load is under way.
    Loading(String),
    /// Ready.
    Ready(ModelInfo),
}

/// Where a queued or running job is.
#[derive(Clone, Debug, PartialEq)]
pub enum JobStatus {
    /// Waiting for the worker.
    Queued,
    /// Rendering.
    Running {
        /// Picture in the batch.
        image: usize,
        /// Steps done.
        step: usize,
        /// Steps per picture.
        total: usize,
        /// Seconds since it started.
        elapsed_secs: f64,
    },
}

/// What a job is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// An ordinary render.
    Render,
    /// One cell of the comparison grid.
    GridCell {
        /// Row (adapter × weight).
        row: usize,
        /// Column (seed).
        col: usize,
    },
}

/// A job in the queue.
#[derive(Clone, Debug)]
pub struct JobView {
    /// Its id.
    pub id: JobId,
    /// A one-line description.
    pub label: String,
    /// Pictures it makes.
    pub batch: usize,
    /// Where it is.
    pub status: JobStatus,
    /// Its cancel flag.
    pub cancel: Arc<AtomicBool>,
    /// What it is for.
    pub kind: JobKind,
}

impl JobView {
    /// Whether a cancel was asked for (the worker stops it within a step).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// A message for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// The sentence.
    pub text: String,
    /// An error (red) or information.
    pub is_error: bool,
}

/// A download from the hub, as its progress bar shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// `owner/name`.
    pub repo_id: String,
    /// The file coming in now.
    pub file: String,
    /// Bytes of it received.
    pub done_bytes: u64,
    /// Its size, 0 while unknown.
    pub total_bytes: u64,
}

impl Download {
    /// A download of `repo_id` that has not received anything yet.
    pub fn starting(repo_id: impl Into<String>) -> Self {
        Self { repo_id: repo_id.into(), file: "listing files".into(), done_bytes: 0, total_bytes: 0 }
    }
}

/// The comparison grid: rows are adapter × weight, columns seeds.
#[derive(Clone, Debug, Default)]
pub struct Grid {
    /// Row labels ("inkStyle × 0.5").
    pub rows: Vec<String>,
    /// Column labels ("seed 42").
    pub cols: Vec<String>,
    /// Finished cells: (row, col) → history id.
    pub cells: HashMap<(usize, usize), u64>,
}

/// The metrics run.
#[derive(Clone, Debug, Default)]
pub enum EvalStatus {
    /// Nothing run yet.
    #[default]
    Idle,
    /// Running.
    Running {
        /// What it does now.
        stage: String,
        /// Units done.
        done: usize,
        /// Units in all.
        total: usize,
        /// Its cancel flag.
        cancel: Arc<AtomicBool>,
    },
    /// The table.
    Done(Box<EvalResults>),
}

/// Everything the window shows.
pub struct AppState {
    /// What persists.
    pub settings: Settings,
    /// Where files live.
    pub paths: Paths,
    /// The gallery.
    pub history: History,
    /// The model.
    pub model: ModelStatus,
    /// A download in progress.
    pub pull: Option<Download>,
    /// Adapter descriptions by file.
    pub lora_info: HashMap<PathBuf, LoraInfo>,
    /// Adapter files that could not be read, with why (the folder browser shows them).
    pub lora_unreadable: HashMap<PathBuf, String>,
    /// What the last merge reported, by adapter name.
    pub lora_reports: HashMap<String, AdapterReport>,
    /// The queue, running job first.
    pub jobs: VecDeque<JobView>,
    /// The latest live preview.
    pub preview: Option<RgbImage>,
    /// Bumped whenever `preview` changes (so the texture is re-uploaded once).
    pub preview_version: u64,
    /// The picture shown in the Image tab.
    pub selected: Option<u64>,
    /// Pictures that arrived this frame, for texture upload.
    pub fresh_images: Vec<(u64, RgbImage)>,
    /// Gallery pictures ticked for export.
    pub marked: std::collections::BTreeSet<u64>,
    /// Messages.
    pub notices: Vec<Notice>,
    /// The metrics run.
    pub eval: EvalStatus,
    /// The grid.
    pub grid: Grid,
    /// The A/B pair.
    pub compare: (Option<u64>, Option<u64>),
    /// The history changed and should be saved.
    pub history_dirty: bool,
    /// A new model arrived: the stack's compatibility must be checked again.
    pub recheck_loras: bool,
    next_job: JobId,
}

impl AppState {
    /// A fresh session over `paths`, reading the gallery history.
    pub fn new(settings: Settings, paths: Paths) -> Self {
        let mut notices = Vec::new();
        let history = History::load(&paths.history_file()).unwrap_or_else(|e| {
            notices.push(Notice { text: e.to_string(), is_error: true });
            History::default()
        });
        let selected = history.items.last().map(|i| i.id);
        Self {
            settings,
            paths,
            history,
            model: ModelStatus::None,
            pull: None,
            lora_info: HashMap::new(),
            lora_unreadable: HashMap::new(),
            lora_reports: HashMap::new(),
            jobs: VecDeque::new(),
            preview: None,
            preview_version: 0,
            selected,
            fresh_images: Vec::new(),
            marked: Default::default(),
            notices,
            eval: EvalStatus::Idle,
            grid: Grid::default(),
            compare: (None, None),
            history_dirty: false,
            recheck_loras: false,
            next_job: 1,
        }
    }

    /// Shows an error.
    pub fn error(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { text: text.into(), is_error: true });
    }

    /// Shows information.
    pub fn info(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { text: text.into(), is_error: false });
    }

    /// A new job id, with its entry in the queue.
    pub fn enqueue(&mut self, label: String, batch: usize, kind: JobKind) -> (JobId, Arc<AtomicBool>) {
        let id = self.next_job;
        self.next_job += 1;
        let cancel = Arc::new(AtomicBool::new(false));
        self.jobs.push_back(JobView {
            id,
            label,
            batch,
            status: JobStatus::Queued,
            cancel: Arc::clone(&cancel),
            kind,
        });
        (id, cancel)
    }

    /// The running job, if any.
    pub fn running(&self) -> Option<&JobView> {
        self.jobs.iter().find(|j| matches!(j.status, JobStatus::Running { .. }))
    }

    /// Stops the running job after its current step and drops every queued one.
    pub fn cancel_all(&mut self) {
        for job in &self.jobs {
            job.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Stops one job.
    pub fn cancel_job(&mut self, id: JobId) {
        if let Some(job) = self.jobs.iter().find(|j| j.id == id) {
            job.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// After the worker thread was replaced: its queue and any comparison are gone, which the
    /// artist is told; returns the model to load again, if one was loaded or loading.
    pub fn worker_restarted(&mut self) -> Option<String> {
        let lost = self.jobs.len();
        for job in self.jobs.drain(..) {
            job.cancel.store(true, Ordering::SeqCst);
        }
        self.preview = None;
        self.pull = None;
        if matches!(self.eval, EvalStatus::Running { .. }) {
            self.eval = EvalStatus::Idle;
        }
        let reload = match std::mem::take(&mut self.model) {
            ModelStatus::Ready(info) => Some(info.source),
            ModelStatus::Loading(source) => Some(source),
            ModelStatus::None => None,
        };
        let jobs = match lost {
            0 => String::new(),
            1 => "; 1 queued job was lost".to_string(),
            n => format!("; {n} queued jobs were lost"),
        };
        self.error(format!("The background worker stopped unexpectedly and was restarted{jobs}. Your canvas and gallery are kept."));
        reload
    }

    /// Takes a picture out of the gallery and every place that shows it.
    pub fn forget_picture(&mut self, id: u64) {
        self.history.items.retain(|i| i.id != id);
        self.marked.remove(&id);
        if self.selected == Some(id) {
            self.selected = self.history.items.last().map(|i| i.id);
        }
        for slot in [&mut self.compare.0, &mut self.compare.1] {
            if *slot == Some(id) {
                *slot = None;
            }
        }
        self.grid.cells.retain(|_, cell| *cell != id);
        self.history_dirty = true;
    }

    /// Takes in one event from the worker.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::ModelLoading { source } => self.model = ModelStatus::Loading(source),
            Event::ModelLoaded(info) => {
                self.settings.remember_model(&info.source);
                self.pull = None;
                self.model = ModelStatus::Ready(info);
                self.lora_reports.clear();
                self.recheck_loras = true;
            }
            Event::ModelFailed { source, message } => {
                self.model = ModelStatus::None;
                self.error(format!("Could not load the model {source}: {message}"));
            }
            Event::PullProgress { repo_id, file, done_bytes, total_bytes } => {
                self.pull = Some(Download { repo_id, file, done_bytes, total_bytes });
            }
            Event::PreviewDecoderReady(kind) => {
                self.pull = None;
                if let ModelStatus::Ready(info) = &mut self.model {
                    info.preview = kind;
                }
            }
            Event::PullFailed { repo_id, message } => {
                self.pull = None;
                self.error(format!("Could not download {repo_id}: {message}"));
            }
            Event::LoraInspected(Ok(info)) => {
                if let Some(slot) = self.settings.loras.iter_mut().find(|s| s.path == info.path) {
                    slot.name = info.name.clone();
                }
                self.lora_info.insert(info.path.clone(), info);
            }
            Event::LoraInspected(Err((path, message))) => {
                // An adapter in the stack is taken out, and the artist told; a file the folder
                // browser merely lists shows its problem on its own card.
                if self.settings.loras.iter().any(|s| s.path == path) {
                    self.settings.loras.retain(|s| s.path != path);
                    self.error(format!("Could not read the adapter {}: {message}", path.display()));
                }
                self.lora_unreadable.insert(path, message);
            }
            Event::LoraReports { reports, .. } => {
                for r in reports {
                    self.lora_reports.insert(r.name.clone(), r);
                }
            }
            Event::JobStarted { id } => {
                if let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) {
                    job.status = JobStatus::Running { image: 0, step: 0, total: 0, elapsed_secs: 0.0 };
                }
            }
            Event::Progress { id, image, step, total, elapsed_secs, preview } => {
                if let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) {
                    job.status = JobStatus::Running { image, step, total, elapsed_secs };
                }
                if let Some(p) = preview {
                    self.preview = Some(p);
                    self.preview_version += 1;
                }
            }
            Event::ImageSaved { id, item, image } => self.image_saved(id, *item, image),
            Event::JobFinished { id, outcome } => {
                let label =
                    self.jobs.iter().find(|j| j.id == id).map(|j| j.label.clone()).unwrap_or_default();
                self.jobs.retain(|j| j.id != id);
                self.preview = None;
                match outcome {
                    JobOutcome::Done => {}
                    JobOutcome::Cancelled => self.info(format!("Cancelled: {label}")),
                    JobOutcome::Failed(message) => self.error(format!("Generation failed: {message}")),
                }
            }
            Event::EvalProgress { stage, done, total } => {
                let cancel = match &self.eval {
                    EvalStatus::Running { cancel, .. } => Arc::clone(cancel),
                    _ => Arc::new(AtomicBool::new(false)),
                };
                self.eval = EvalStatus::Running { stage, done, total, cancel };
            }
            Event::EvalFinished(results) => self.eval = EvalStatus::Done(results),
            Event::EvalFailed { message } => {
                self.eval = EvalStatus::Idle;
                self.error(format!("The metrics comparison stopped: {message}"));
            }
        }
    }

    fn image_saved(&mut self, id: JobId, mut item: crate::history::HistoryItem, image: RgbImage) {
        // The history hands out ids, so a picture's texture key is unique across restarts.
        item.id = self.history.next_id();
        let kind = self.jobs.iter().find(|j| j.id == id).map(|j| j.kind);
        if let Some(JobKind::GridCell { row, col }) = kind {
            self.grid.cells.insert((row, col), item.id);
        } else {
            self.selected = Some(item.id);
        }
        self.fresh_images.push((item.id, image));
        self.history.items.push(item);
        self.history_dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryItem;
    use crate::worker::PreviewKind;

    fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = Paths::under(dir.path().to_path_buf());
        (dir, AppState::new(Settings::default(), paths))
    }

    #[test]
    fn a_restarted_worker_drops_its_queue_and_reloads_the_model() {
        let (_dir, mut s) = state();
        s.apply(Event::ModelLoading { source: "models/sd15".into() });
        let (_, first) = s.enqueue("a".into(), 1, JobKind::Render);
        let (_, second) = s.enqueue("b".into(), 1, JobKind::Render);
        assert_eq!(s.worker_restarted().as_deref(), Some("models/sd15"), "the model is loaded again");
        assert!(s.jobs.is_empty() && first.load(Ordering::SeqCst) && second.load(Ordering::SeqCst));
        assert_eq!(s.model, ModelStatus::None, "no longer \"Loading…\"");
        let notice = s.notices.last().expect("told");
        assert!(notice.is_error && notice.text.contains("2 queued jobs were lost"), "{}", notice.text);
        assert_eq!(s.worker_restarted(), None, "nothing to reload without a model");
    }

    #[test]
    fn a_downloaded_preview_decoder_upgrades_the_loaded_models_previews() {
        let (_dir, mut s) = state();
        let info = ModelInfo {
            source: "tiny".into(),
            name: "tiny".into(),
            family: "SD 1.x".into(),
            inpainting: false,
            device: "cpu".into(),
            precision: Precision::F32,
            load_secs: 0.1,
            preview: PreviewKind::Approximate,
        };
        s.apply(Event::ModelLoaded(info));
        s.pull = Some(Download::starting("madebyollin/taesd"));
        s.apply(Event::PreviewDecoderReady(PreviewKind::TinyDecoder("taesd".into())));
        assert!(s.pull.is_none(), "the download bar goes away");
        assert!(
            matches!(&s.model, ModelStatus::Ready(m) if m.preview == PreviewKind::TinyDecoder("taesd".into())),
            "{:?}",
            s.model
        );
    }

    #[test]
    fn finished_pictures_enter_the_gallery_and_leave_the_queue() {
        let (_dir, mut s) = state();
        let (id, _) = s.enqueue("a cat".into(), 1, JobKind::Render);
        s.apply(Event::JobStarted { id });
        s.apply(Event::Progress {
            id,
            image: 0,
            step: 3,
            total: 10,
            elapsed_secs: 1.5,
            preview: Some(RgbImage::new(8, 8)),
        });
        assert_eq!(
            s.running().map(|j| j.status.clone()),
            Some(JobStatus::Running { image: 0, step: 3, total: 10, elapsed_secs: 1.5 })
        );
        assert_eq!(s.preview_version, 1);
        let item = HistoryItem {
            id: 1,
            path: "x.png".into(),
            request: GenerationRequest::default(),
            saved_prompt: String::new(),
            model: "tiny".into(),
            created_unix: 0,
            timings: Default::default(),
        };
        s.apply(Event::ImageSaved { id, item: Box::new(item), image: RgbImage::new(8, 8) });
        s.apply(Event::JobFinished { id, outcome: JobOutcome::Done });
        assert!(s.jobs.is_empty() && s.preview.is_none());
        assert_eq!((s.history.items.len(), s.selected, s.history_dirty), (1, Some(1), true));
    }

    #[test]
    fn a_forgotten_picture_leaves_every_view() {
        let (_dir, mut s) = state();
        for id in [1, 2] {
            s.history.items.push(HistoryItem {
                id,
                path: format!("{id}.png").into(),
                request: GenerationRequest::default(),
                saved_prompt: String::new(),
                model: "tiny".into(),
                created_unix: 0,
                timings: Default::default(),
            });
        }
        (s.selected, s.compare) = (Some(2), (Some(2), Some(1)));
        s.marked.insert(2);
        s.grid.cells.insert((0, 0), 2);
        s.forget_picture(2);
        assert_eq!((s.history.items.len(), s.selected, s.compare), (1, Some(1), (None, Some(1))));
        assert!(s.marked.is_empty() && s.grid.cells.is_empty() && s.history_dirty);
    }

    #[test]
    fn failures_become_readable_notices() {
        let (_dir, mut s) = state();
        s.apply(Event::ModelFailed { source: "m.safetensors".into(), message: "not a checkpoint".into() });
        assert_eq!(s.model, ModelStatus::None);
        assert!(s.notices[0].is_error && s.notices[0].text.contains("m.safetensors"));
    }

    #[test]
    fn cancelling_sets_every_flag() {
        let (_dir, mut s) = state();
        let (_, a) = s.enqueue("a".into(), 1, JobKind::Render);
        let (_, b) = s.enqueue("b".into(), 1, JobKind::Render);
        s.cancel_all();
        assert!(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst));
    }

    #[test]
    fn saved_prompts_carry_the_enabled_stack() {
        let mut settings = Settings { prompt: "a cat".into(), ..Default::default() };
        settings.loras.push(LoraSlot { weight: 0.5, ..LoraSlot::new("ink.safetensors".into()) });
        settings.loras.push(LoraSlot { enabled: false, ..LoraSlot::new("off.safetensors".into()) });
        assert_eq!(settings.saved_prompt(), "a cat <lora:ink:0.5>");
        assert_eq!(settings.request().loras.len(), 1);
        let mut back = Settings::default();
        back.use_request(&GenerationRequest { prompt: settings.saved_prompt(), ..Default::default() });
        assert_eq!((back.prompt.as_str(), back.loras.len(), back.loras[0].weight), ("a cat", 1, 0.5));
    }
}
