//! The studio's app struct: owns the worker handle, the state, textures and the canvas; drains
//! worker events once per frame, then lays out the panels. Closing the window saves settings
//! (eframe persistence) and the gallery history.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui::Ui;

use super::canvas::Canvas;
use super::dialogs::{Dialogs, SystemDialogs};
use super::image_view::ViewTransform;
use super::state::{AppState, CanvasUse, JobKind, Settings, Tab};
use super::textures::Textures;
use crate::engine::device::DeviceChoice;
use crate::paths::Paths;
use crate::worker::{Command, GenerateJob, Worker};

/// How the studio starts.
pub struct LaunchOptions {
    /// Where the gallery, presets and inputs live.
    pub paths: Paths,
    /// A model to load at once (`easel --model PATH`).
    pub model: Option<String>,
    /// File dialogs.
    pub dialogs: Box<dyn Dialogs>,
    /// Restore the previous session's settings (off in tests).
    pub restore_settings: bool,
}

impl LaunchOptions {
    /// The system folders and dialogs.
    pub fn system(model: Option<String>) -> Self {
        Self { paths: Paths::from_system(), model, dialogs: Box::new(SystemDialogs), restore_settings: true }
    }
}

/// A/B compare modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompareMode {
    Wipe,
    SideBySide,
    Grid,
}

/// The studio.
pub struct EaselApp {
    /// Everything the window shows.
    pub state: AppState,
    /// The sketch / img2img / mask canvas.
    pub canvas: Canvas,
    pub(crate) worker: Worker,
    pub(crate) dialogs: Box<dyn Dialogs>,
    pub(crate) textures: Textures,
    pub(crate) view: ViewTransform,
    pub(crate) compare_view: ViewTransform,
    pub(crate) compare_mode: CompareMode,
    pub(crate) wipe: f32,
    pub(crate) lora_browser_open: bool,
    pub(crate) preset_name: String,
    pub(crate) metric_to_plot: usize,
    pub(crate) lora_files: Option<(String, Vec<PathBuf>)>,
    pub(crate) lora_requested: std::collections::HashSet<PathBuf>,
    history_saved: Instant,
    history_saver: Option<super::history_saver::HistorySaver>,
    last_frame: Option<Duration>,
    worker_restarts: u32,
}

/// How often a worker that stopped unexpectedly is replaced before the window gives up.
const MAX_WORKER_RESTARTS: u32 = 3;

impl EaselApp {
    /// Builds the app inside eframe (or egui_kittest's harness).
    pub fn new(cc: &eframe::CreationContext<'_>, options: LaunchOptions) -> Self {
        let settings: Settings = if options.restore_settings {
            cc.storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default()
        } else {
            Settings::default()
        };
        let worker = spawn_worker(&cc.egui_ctx).unwrap_or_else(|e| {
            // Without a thread nothing can render; this is the one failure the window cannot show.
            panic!("cannot start the background worker thread: {e}")
        });
        let canvas = Canvas::new(settings.width as u32, settings.height as u32);
        let mut app = Self {
            state: AppState::new(settings, options.paths),
            canvas,
            worker,
            dialogs: options.dialogs,
            textures: Textures::default(),
            view: ViewTransform::default(),
            compare_view: ViewTransform::default(),
            compare_mode: CompareMode::Wipe,
            wipe: 0.5,
            lora_browser_open: false,
            preset_name: String::new(),
            metric_to_plot: 0,
            lora_files: None,
            lora_requested: Default::default(),
            history_saved: Instant::now(),
            history_saver: None,
            last_frame: None,
            worker_restarts: 0,
        };
        app.history_saver = super::history_saver::HistorySaver::spawn(app.state.paths.history_file())
            .map_err(|e| {
                app.state.error(format!("cannot start the gallery saver ({e}); the gallery is saved on exit"))
            })
            .ok();
        let model = options.model.or_else(|| {
            // Reopen the last model when it is still there.
            app.state.settings.recent_models.first().filter(|m| crate::hub::resolve_model(m).is_ok()).cloned()
        });
        if let Some(m) = model {
            app.load_model(m);
        }
        let paths: Vec<PathBuf> = app.state.settings.loras.iter().map(|s| s.path.clone()).collect();
        for path in paths {
            app.send(Command::InspectLora { path });
        }
        app
    }

    /// Sends a command to the worker, showing why if it cannot take it.
    pub(crate) fn send(&mut self, command: Command) {
        if let Err(e) = self.worker.send(command) {
            self.state.error(e);
        }
    }

    /// Replaces a worker thread that ended: its jobs are reported as lost, and the model it held
    /// is loaded again on the new one, so the window never waits on "Loading…" forever.
    fn restart_worker(&mut self, ctx: &egui::Context) {
        // A worker that dies again at once (the same model, say) would otherwise be restarted
        // every frame; after a few tries the window says so and stops.
        self.worker_restarts = self.worker_restarts.saturating_add(1);
        if self.worker_restarts > MAX_WORKER_RESTARTS {
            if self.worker_restarts == MAX_WORKER_RESTARTS + 1 {
                self.state.error("The background worker keeps stopping; save your canvas and restart Easel");
            }
            return;
        }
        match spawn_worker(ctx) {
            Ok(worker) => self.worker = worker,
            Err(e) => {
                self.state.error(format!("The background worker stopped and cannot be restarted ({e}); save your canvas and restart Easel"));
                return;
            }
        }
        if let Some(source) = self.state.worker_restarted() {
            self.load_model(source);
        }
    }

    /// Loads a model on the worker.
    pub fn load_model(&mut self, source: String) {
        let dtype = self.state.settings.dtype.clone();
        self.send(Command::LoadModel { source, device: DeviceChoice::Auto, dtype });
    }

    /// How long the last frame's layout took (for the frame-time benchmark and the status bar).
    pub fn last_frame_time(&self) -> Option<Duration> {
        self.last_frame
    }

    /// Queues the current settings as a render (the Generate button).
    pub fn generate(&mut self) {
        if !matches!(self.state.model, super::state::ModelStatus::Ready(_)) {
            self.state.error("Open a model first: choose a file or folder, or pull one from the hub.");
            return;
        }
        if !self.state.settings.seed_locked {
            self.state.settings.seed = crate::engine::request::random_seed();
        }
        let mut request = self.state.settings.request();
        if let Err(e) = request.validate() {
            self.state.error(e.to_string());
            return;
        }
        let (mut init_image, mut mask) = (None, None);
        if self.state.settings.canvas_use != CanvasUse::Off {
            match self.canvas.inputs(&self.state.paths.inputs(), request.width as u32, request.height as u32)
            {
                Ok(inputs) => {
                    request.init_image = Some(inputs.image_path);
                    init_image = Some(inputs.image);
                    if self.state.settings.canvas_use == CanvasUse::Inpaint {
                        request.mask = Some(inputs.mask_path);
                        mask = Some(inputs.mask);
                    }
                }
                Err(e) => {
                    self.state.error(e.to_string());
                    return;
                }
            }
        }
        let label = job_label(&request.prompt, request.batch, request.seed);
        let saved_prompt = self.state.settings.saved_prompt();
        let (id, cancel) = self.state.enqueue(label, request.batch, JobKind::Render);
        let output_dir = self.state.paths.gallery();
        self.send(Command::Generate(Box::new(GenerateJob {
            id,
            request,
            saved_prompt,
            init_image,
            mask,
            cancel,
            output_dir,
        })));
    }

    fn drain_events(&mut self, ctx: &egui::Context) {
        while let Some(event) = self.worker.try_recv() {
            self.state.apply(event);
        }
        if self.worker.has_stopped() {
            self.restart_worker(ctx);
        }
        if std::mem::take(&mut self.state.recheck_loras) {
            let paths: Vec<PathBuf> = self.state.settings.loras.iter().map(|s| s.path.clone()).collect();
            for path in paths {
                self.send(Command::InspectLora { path });
            }
        }
        for (id, image) in std::mem::take(&mut self.state.fresh_images) {
            self.textures.insert(ctx, id, &image);
        }
        if self.state.history_dirty && self.history_saved.elapsed() > Duration::from_secs(1) {
            self.queue_history_save();
        }
        let failures = self.history_saver.as_ref().map(|s| s.failures()).unwrap_or_default();
        for message in failures {
            self.state.error(message);
        }
    }

    /// Hands the gallery index to the saving thread.
    fn queue_history_save(&mut self) {
        self.history_saved = Instant::now();
        self.state.history_dirty = false;
        match &self.history_saver {
            Some(saver) => saver.save(self.state.history.clone()),
            None => self.save_history_now(),
        }
    }

    /// Writes the gallery index on this thread (on exit, when nothing may be left queued).
    fn save_history_now(&mut self) {
        self.history_saved = Instant::now();
        self.state.history_dirty = false;
        if let Err(e) = self.state.history.save(&self.state.paths.history_file()) {
            self.state.error(e.to_string());
        }
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for file in dropped {
            let path = file.path().to_path_buf();
            if !path.as_os_str().is_empty() {
                self.import_settings(&path);
            }
        }
    }

    /// Takes the generation settings from a PNG (drag and drop, or the Import button).
    pub fn import_settings(&mut self, path: &std::path::Path) {
        match crate::export::import::import_png(path) {
            Ok(imported) => {
                self.state.settings.use_request(&imported.request);
                let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().to_string());
                self.state.info(format!("Settings taken from {name} ({} metadata)", imported.source));
                let paths: Vec<PathBuf> = self.state.settings.loras.iter().map(|s| s.path.clone()).collect();
                for path in paths {
                    self.send(Command::InspectLora { path });
                }
            }
            Err(e) => self.state.error(e.to_string()),
        }
    }

    fn top_bar_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.heading("Easel");
            ui.separator();
            for (tab, name) in [
                (Tab::Image, "Image"),
                (Tab::Gallery, "Gallery"),
                (Tab::Compare, "Compare"),
                (Tab::Metrics, "Metrics"),
                (Tab::Canvas, "Canvas"),
            ] {
                ui.selectable_value(&mut self.state.settings.tab, tab, name);
            }
            ui.separator();
            super::controls::presets_menu_ui(self, ui);
        });
    }

    fn notices_ui(&mut self, ui: &mut Ui) {
        let mut dismiss = None;
        for (i, notice) in self.state.notices.iter().enumerate().rev().take(3) {
            ui.horizontal(|ui| {
                let color =
                    if notice.is_error { ui.visuals().error_fg_color } else { ui.visuals().text_color() };
                if ui.small_button("×").on_hover_text("Dismiss").clicked() {
                    dismiss = Some(i);
                }
                ui.colored_label(color, &notice.text);
            });
        }
        if let Some(i) = dismiss {
            self.state.notices.remove(i);
        }
    }

    fn status_bar_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            match self.state.running().map(|j| (j.label.clone(), j.batch, j.status.clone())) {
                Some((
                    label,
                    batch,
                    super::state::JobStatus::Running { image, step, total, elapsed_secs },
                )) => {
                    let done = image * total + step;
                    let all = (batch * total).max(1);
                    let eta =
                        if done > 0 { elapsed_secs / done as f64 * (all - done) as f64 } else { f64::NAN };
                    ui.add(
                        egui::ProgressBar::new(done as f32 / all as f32)
                            .desired_width(240.0)
                            .text(format!("step {step}/{total} · picture {}/{batch}", image + 1)),
                    );
                    let eta =
                        if eta.is_finite() { format!("{eta:.0} s left") } else { "estimating…".into() };
                    ui.label(format!("{label} · {elapsed_secs:.1} s · {eta}"));
                }
                _ => {
                    ui.label(match &self.state.model {
                        super::state::ModelStatus::Ready(m) => {
                            format!("Ready · {} ({}, {}, {})", m.name, m.family, m.device, m.dtype)
                        }
                        super::state::ModelStatus::Loading(s) => format!("Loading {s}…"),
                        super::state::ModelStatus::None => "No model loaded".into(),
                    });
                }
            }
            let queued = self.state.jobs.len().saturating_sub(usize::from(self.state.running().is_some()));
            if queued > 0 {
                ui.label(format!("· {queued} queued"));
            }
        });
    }
}

impl eframe::App for EaselApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        let started = Instant::now();
        let ctx = ui.ctx().clone();
        self.textures.begin_frame();
        self.drain_events(&ctx);
        self.dropped_files(&ctx);
        egui::Panel::top("top").show(ui, |ui| {
            self.top_bar_ui(ui);
            if !self.state.notices.is_empty() {
                self.notices_ui(ui);
            }
        });
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar_ui(ui));
        egui::Panel::left("controls").resizable(true).default_size(340.0).show(ui, |ui| {
            super::controls::controls_ui(self, ui);
        });
        egui::CentralPanel::default().show(ui, |ui| match self.state.settings.tab {
            _ if matches!(self.state.model, super::state::ModelStatus::None)
                && self.state.history.items.is_empty()
                && self.state.settings.tab == Tab::Image =>
            {
                super::controls::first_run_ui(self, ui)
            }
            Tab::Image => super::gallery::image_tab_ui(self, ui),
            Tab::Gallery => super::gallery::gallery_tab_ui(self, ui),
            Tab::Compare => super::compare::compare_tab_ui(self, ui),
            Tab::Metrics => super::metrics_view::metrics_tab_ui(self, ui),
            Tab::Canvas => super::canvas::canvas_tab_ui(self, ui),
        });
        if self.lora_browser_open {
            super::lora_panel::lora_browser_window(self, &ctx);
        }
        self.last_frame = Some(started.elapsed());
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.state.settings);
        if self.state.history_dirty {
            self.queue_history_save();
        }
    }

    fn on_exit(&mut self) {
        // Stop rendering at the next step; finished pictures are already saved.
        self.state.cancel_all();
        // The newest index goes after anything queued, and the exit waits for it.
        match self.history_saver.take() {
            Some(saver) => {
                for message in saver.finish(self.state.history.clone()) {
                    eprintln!("easel: {message}");
                }
            }
            None => self.save_history_now(),
        }
    }
}

/// A short queue label: the prompt's start, the batch and seed.
fn job_label(prompt: &str, batch: usize, seed: u64) -> String {
    let mut text: String = prompt.chars().take(32).collect();
    if prompt.chars().count() > 32 {
        text.push('…');
    }
    if text.is_empty() {
        text = "(no prompt)".into();
    }
    if batch > 1 {
        format!("{text} ×{batch} (seed {seed})")
    } else {
        format!("{text} (seed {seed})")
    }
}

/// The worker thread, waking this window after each event.
fn spawn_worker(ctx: &egui::Context) -> std::io::Result<Worker> {
    let ctx = ctx.clone();
    Worker::spawn(Box::new(move || ctx.request_repaint()))
}
