//! The background worker: one named thread that owns the loaded model and does every slow thing
//! (loading, downloading, generating, measuring) so the studio never waits on the engine.
//! `Command`s go in through a bounded channel; `Event`s come out, and a wake-up callback tells the
//! window to redraw. Each generation carries its own cancel flag, checked between steps, so a
//! queued job can be dropped and a running one stops within one step.

mod evaluate;
mod generate;
mod live;
mod loading;
pub mod preview;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use image::{GrayImage, RgbImage, RgbaImage};

pub use evaluate::{config_dir, ConfigResult, EvalConfig, EvalJob, EvalResults, PromptSource};

pub use live::{FrameDone, LiveJob};
pub use preview::PreviewKind;

use crate::engine::device::{DeviceChoice, Precision};
use crate::engine::lora::AdapterReport;
use crate::engine::GenerationRequest;
use crate::history::HistoryItem;

/// Identifies one generation job.
pub type JobId = u64;

/// What the worker is asked to do.
pub enum Command {
    /// Load a model (folder, single file, or a hub id already pulled), replacing the current one.
    LoadModel {
        /// Path or hub id.
        source: String,
        /// Where to run.
        device: DeviceChoice,
        /// The weights' precision.
        precision: Precision,
    },
    /// Download a diffusers model from the Hugging Face hub, then load it.
    PullModel {
        /// `owner/name`.
        repo_id: String,
        /// The precision of the load that follows (half precision downloads the fp16 files).
        precision: Precision,
    },
    /// Download a family's tiny preview decoder (TAESD, TAESDXL), then use it for the loaded
    /// model's previews when it is of that family.
    PullPreviewDecoder(crate::engine::Family),
    /// Download a ControlNet (a diffusers ControlNet repository) for a unit of the studio.
    PullControlNet {
        /// `owner/name`.
        repo_id: String,
        /// The studio's unit that asked.
        unit: usize,
    },
    /// Download a live preset's few-step LoRA (one file of a repository).
    PullLiveLora {
        /// `owner/name`.
        repo_id: String,
        /// The file.
        file: String,
    },
    /// Read an adapter's metadata and check it against the loaded model.
    InspectLora {
        /// The file.
        path: PathBuf,
    },
    /// Generate pictures.
    Generate(Box<GenerateJob>),
    /// Render one live-painting frame (skipped when cancelled before it starts).
    Live(Box<LiveJob>),
    /// Generate pictures per configuration and score them against references.
    Evaluate(Box<EvalJob>),
}

/// One generation: a request plus the in-memory inputs the canvas provides.
pub struct GenerateJob {
    /// The job's id, echoed in its events.
    pub id: JobId,
    /// The settings (init image and mask paths point at saved copies of the inputs).
    pub request: GenerationRequest,
    /// The prompt as saved in metadata (with LoRA tags).
    pub saved_prompt: String,
    /// img2img start picture, already at the request's size.
    pub init_image: Option<RgbImage>,
    /// Inpainting mask at the request's size.
    pub mask: Option<GrayImage>,
    /// Set to stop this job (before it starts, or between steps).
    pub cancel: Arc<AtomicBool>,
    /// Where finished PNGs go.
    pub output_dir: PathBuf,
}

/// The loaded model, as the studio shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// What the user chose (path or hub id).
    pub source: String,
    /// Display name.
    pub name: String,
    /// The model's family (SD 1.x, SD 2.x, SDXL).
    pub family: crate::engine::Family,
    /// A 9-channel inpainting model.
    pub inpainting: bool,
    /// "cpu", "cuda:0"…
    pub device: String,
    /// The weights' precision.
    pub precision: Precision,
    /// Seconds the load took.
    pub load_secs: f64,
    /// How live previews are drawn for it.
    pub preview: PreviewKind,
}

/// An adapter's description for the LoRA panel.
#[derive(Clone, Debug)]
pub struct LoraInfo {
    /// The file.
    pub path: PathBuf,
    /// Name used in prompt tags.
    pub name: String,
    /// Human title.
    pub title: String,
    /// Trigger words, most useful first.
    pub trigger_words: Vec<String>,
    /// Rank, when known.
    pub rank: Option<usize>,
    /// The file's preview picture.
    pub thumbnail: Option<RgbaImage>,
    /// Against the loaded model: `Ok(summary)` or `Err(why it does not fit)`; `None` with no model.
    pub compatibility: Option<Result<String, String>>,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Every picture was made.
    Done,
    /// Stopped by the user; finished pictures were kept.
    Cancelled,
    /// Something went wrong; the message says what.
    Failed(String),
}

/// What the worker reports.
pub enum Event {
    /// A model load started.
    ModelLoading {
        /// What is loading.
        source: String,
    },
    /// The model is ready.
    ModelLoaded(ModelInfo),
    /// The model could not be loaded; the previous one (if any) is still loaded.
    ModelFailed {
        /// What failed.
        source: String,
        /// Why, in a sentence.
        message: String,
    },
    /// Download progress of one file.
    PullProgress {
        /// The repository.
        repo_id: String,
        /// The file being fetched.
        file: String,
        /// Bytes done.
        done_bytes: u64,
        /// Bytes in all (0 when unknown).
        total_bytes: u64,
    },
    /// A download failed.
    PullFailed {
        /// The repository.
        repo_id: String,
        /// Why.
        message: String,
    },
    /// The tiny preview decoder was downloaded; how the loaded model's previews are drawn now.
    PreviewDecoderReady(PreviewKind),
    /// A ControlNet was downloaded for a unit.
    ControlNetPulled {
        /// The studio's unit that asked.
        unit: usize,
        /// The repository.
        repo_id: String,
        /// Its local folder.
        path: PathBuf,
    },
    /// A live preset's LoRA was downloaded.
    LiveLoraPulled {
        /// The repository.
        repo_id: String,
        /// The file on disk.
        path: PathBuf,
    },
    /// An adapter was read.
    LoraInspected(Result<LoraInfo, (PathBuf, String)>),
    /// What each adapter of a job's stack did.
    LoraReports {
        /// The job.
        id: JobId,
        /// One report per enabled adapter.
        reports: Vec<AdapterReport>,
    },
    /// A job began.
    JobStarted {
        /// The job.
        id: JobId,
    },
    /// One step done.
    Progress {
        /// The job.
        id: JobId,
        /// Picture index within the batch.
        image: usize,
        /// Steps done.
        step: usize,
        /// Steps in all.
        total: usize,
        /// Seconds since the job started.
        elapsed_secs: f64,
        /// A cheap picture of the current latents.
        preview: Option<RgbImage>,
    },
    /// A picture is finished and saved.
    ImageSaved {
        /// The job.
        id: JobId,
        /// Its history entry.
        item: Box<HistoryItem>,
        /// The pixels (so the window need not read the file back).
        image: RgbImage,
    },
    /// A job ended.
    JobFinished {
        /// The job.
        id: JobId,
        /// How.
        outcome: JobOutcome,
    },
    /// A live frame is ready.
    LiveFrame(Box<FrameDone>),
    /// A live frame was cancelled (stale) or failed.
    LiveStopped {
        /// The frame.
        id: JobId,
        /// Why.
        outcome: JobOutcome,
    },
    /// Metrics comparison progress.
    EvalProgress {
        /// What is happening ("generating base", "features"…).
        stage: String,
        /// Units done.
        done: usize,
        /// Units in all.
        total: usize,
    },
    /// The comparison's table.
    EvalFinished(Box<EvalResults>),
    /// The comparison failed.
    EvalFailed {
        /// Why.
        message: String,
    },
}

/// A handle on the worker thread.
pub struct Worker {
    commands: SyncSender<Command>,
    events: Receiver<Event>,
    thread: std::thread::JoinHandle<()>,
}

/// Sends events to the window and wakes it.
pub(crate) struct Outbox {
    events: SyncSender<Event>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Outbox {
    /// Delivers an event; waits if the window is far behind (it drains every frame).
    pub(crate) fn send(&self, event: Event) {
        // A closed channel means the window is gone; there is nobody left to tell.
        let _ = self.events.send(event);
        (self.wake)();
    }

    /// Delivers an event unless the channel is full (previews: a newer one comes next step).
    pub(crate) fn offer(&self, event: Event) {
        if self.events.try_send(event).is_ok() {
            (self.wake)();
        }
    }
}

impl Worker {
    /// Starts the worker thread; `wake` is called after every event (e.g. `ctx.request_repaint()`).
    pub fn spawn(wake: Box<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        Self::spawn_inner(wake, None)
    }

    /// Starts the worker with `model` already loaded (built in memory, as `easel bench --live`
    /// builds random full-size networks); its first event is `ModelLoaded`.
    pub fn with_model(
        model: crate::engine::StableDiffusion,
        precision: Precision,
        wake: Box<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let source = model.source.display().to_string();
        Self::spawn_inner(wake, Some(loading::Loaded::new(model, &source, precision, 0.0, None)))
    }

    fn spawn_inner(
        wake: Box<dyn Fn() + Send + Sync>,
        model: Option<loading::Loaded>,
    ) -> std::io::Result<Self> {
        let (command_tx, command_rx) = sync_channel::<Command>(256);
        let (event_tx, event_rx) = sync_channel::<Event>(1024);
        let outbox = Outbox { events: event_tx, wake };
        // Not joined: on exit the window cancels its jobs and leaves; every file write is atomic.
        // Dropping this handle closes the command channel, which ends the thread's loop.
        let thread = std::thread::Builder::new()
            .name("easel-worker".into())
            .spawn(move || loading::run(command_rx, outbox, model))?;
        Ok(Self { commands: command_tx, events: event_rx, thread })
    }

    /// Whether the thread has ended although the window still holds its handle: every command's
    /// panic is caught, so this means a failure outside any command, and the window restarts it.
    pub fn has_stopped(&self) -> bool {
        self.thread.is_finished()
    }

    /// Queues a command without blocking; fails only if the queue is full or the worker died.
    pub fn send(&self, command: Command) -> Result<(), String> {
        self.commands.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => "the render queue is full; wait for some jobs to finish".to_string(),
            TrySendError::Disconnected(_) => "the background worker has stopped; restart Easel".to_string(),
        })
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}
