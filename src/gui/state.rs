//! The studio's state, apart from any window: what the current session knows (`AppState`), beside
//! what persists between runs (`Settings`, in `settings.rs`). Worker events enter only through [`AppState::apply`],
//! so every reaction to the engine can be tested without a window.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use image::RgbImage;

use crate::engine::lora::AdapterReport;

use crate::history::History;
use crate::paths::Paths;
use crate::worker::{EvalResults, Event, JobId, JobOutcome, LoraInfo, ModelInfo};

pub use super::settings::{CanvasUse, LoraSlot, MetricsForm, Settings, Tab};

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

impl ModelStatus {
    /// The loaded model's family; SD 1.x, whose sizes and previews are the defaults, when none is.
    pub fn family(&self) -> crate::engine::Family {
        match self {
            ModelStatus::Ready(info) => info.family,
            _ => crate::engine::Family::Sd1,
        }
    }
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
    /// Live painting's Keep: the canvas rendered with the full settings.
    Keep,
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
    /// The embeddings folder, as last read.
    pub embedding_names: super::prompt_options::EmbeddingList,
    /// The token counters of the prompt and the negative prompt.
    pub token_counts: [super::token_count::TokenCounter; 2],
    /// Live painting.
    pub live: super::live::LiveSession,
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
            embedding_names: Default::default(),
            token_counts: Default::default(),
            live: Default::default(),
            next_job: 1,
        }
    }

    /// Shows an error.
    pub fn error(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { text: sentence(text.into()), is_error: true });
    }

    /// Shows information.
    pub fn info(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { text: sentence(text.into()), is_error: false });
    }

    /// A new job id, with its entry in the queue.
    pub fn enqueue(&mut self, label: String, batch: usize, kind: JobKind) -> (JobId, Arc<AtomicBool>) {
        let id = self.next_id();
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

    /// A fresh job id (queued jobs and live frames share the numbering).
    pub fn next_id(&mut self) -> JobId {
        let id = self.next_job;
        self.next_job += 1;
        id
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
        self.live.cancel();
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

    /// A model of another family takes its own native size when the size was the previous
    /// family's (a size the artist chose stays): SDXL at 512² makes broken pictures.
    fn size_for_family(&mut self, family: crate::engine::Family) {
        let before = self.model.family();
        let size = (self.settings.width, self.settings.height);
        if before != family && size == before.native_size() {
            (self.settings.width, self.settings.height) = family.native_size();
        }
    }

    /// Takes in one event from the worker.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::ModelLoading { source } => self.model = ModelStatus::Loading(source),
            Event::ModelLoaded(info) => {
                self.settings.remember_model(&info.source);
                self.size_for_family(info.family);
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
            Event::ControlNetPulled { unit, repo_id, path } => {
                self.pull = None;
                if let Some(slot) = self.settings.controls.get_mut(unit) {
                    slot.spec.model = path;
                }
                self.info(format!("Downloaded the ControlNet {repo_id} for unit {unit}"));
            }
            Event::LiveLoraPulled { repo_id, path } => {
                self.pull = None;
                let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().to_string());
                self.settings.live.lora = Some(path);
                self.info(format!("Downloaded {name} from {repo_id}: live frames use it now"));
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
            Event::LiveFrame(done) => self.live.frame_arrived(*done),
            Event::LiveStopped { id, outcome } => self.live.stopped(id, outcome),
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
        match kind {
            Some(JobKind::GridCell { row, col }) => {
                self.grid.cells.insert((row, col), item.id);
            }
            Some(JobKind::Keep) => {
                // The artist stays on the canvas; say where the picture went.
                self.selected = Some(item.id);
                self.info(format!("Kept as picture {}: see the Image and Gallery tabs", item.id));
            }
            _ => self.selected = Some(item.id),
        }
        self.fresh_images.push((item.id, image));
        self.history.items.push(item);
        self.history_dirty = true;
    }
}

/// A message as a sentence: the library's errors start in lower case ("output folder not found").
fn sentence(text: String) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_lowercase() => first.to_uppercase().chain(chars).collect(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::device::Precision;
    use crate::engine::GenerationRequest;
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
    fn a_downloaded_controlnet_lands_in_the_unit_that_asked() {
        let (_dir, mut s) = state();
        s.settings.controls = vec![Default::default(), Default::default()];
        s.pull = Some(Download::starting("lllyasviel/control_v11p_sd15_scribble"));
        let path = std::path::PathBuf::from("/cache/scribble");
        s.apply(Event::ControlNetPulled {
            unit: 1,
            repo_id: "lllyasviel/control_v11p_sd15_scribble".into(),
            path: path.clone(),
        });
        assert!(s.pull.is_none());
        assert_eq!(s.settings.controls[1].spec.model, path);
        assert!(s.settings.controls[0].spec.model.as_os_str().is_empty());
    }

    #[test]
    fn a_downloaded_preview_decoder_upgrades_the_loaded_models_previews() {
        let (_dir, mut s) = state();
        let info = ModelInfo {
            source: "tiny".into(),
            name: "tiny".into(),
            family: crate::engine::Family::Sd1,
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
}
