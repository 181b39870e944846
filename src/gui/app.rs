//! The studio's app struct: owns the worker handle, the state, textures, the canvas and each
//! panel's view state; drains worker events once per frame, lays out the panels, then carries out
//! the commands they pushed (`run.rs`). Closing the window saves settings (eframe persistence) and
//! the gallery history.

use std::time::{Duration, Instant};

use egui::Ui;

use super::canvas::Canvas;
use super::command::{Commands, UiCommand};
use super::compare::CompareView;
use super::controls::PresetsMenu;
use super::dialogs::{Answer, DialogRunner, Dialogs, PathRequest, SystemDialogs};
use super::lora_panel::LoraBrowser;
use super::metrics_view::MetricsView;
use super::state::{AppState, Settings, Tab};
use super::textures::Textures;
use crate::paths::Paths;
use crate::worker::Worker;

/// How the studio starts.
pub struct LaunchOptions {
    /// Where the gallery, presets and inputs live.
    pub paths: Paths,
    /// A model to load at once (`easel --model PATH`).
    pub model: Option<String>,
    /// File dialogs.
    pub dialogs: std::sync::Arc<dyn Dialogs>,
    /// Restore the previous session's settings (off in tests).
    pub restore_settings: bool,
}

impl LaunchOptions {
    /// The system folders and dialogs.
    pub fn system(model: Option<String>) -> Self {
        Self {
            paths: Paths::from_system(),
            model,
            dialogs: std::sync::Arc::new(SystemDialogs),
            restore_settings: true,
        }
    }
}

/// Each panel's own view state: what it shows, apart from the settings and the session.
#[derive(Debug, Default)]
pub struct Panels {
    /// The Image tab.
    pub image: super::gallery::ImageView,
    /// The Compare tab.
    pub compare: CompareView,
    /// The LoRA folder window.
    pub lora_browser: LoraBrowser,
    /// The presets menu.
    pub presets: PresetsMenu,
    /// The Metrics tab.
    pub metrics: MetricsView,
    /// The ControlNet panel's map previews.
    pub control: super::control_panel::ControlView,
}

/// The studio.
pub struct EaselApp {
    /// Everything the window shows.
    pub state: AppState,
    /// The sketch / img2img / mask canvas.
    pub canvas: Canvas,
    /// Each panel's view state.
    pub panels: Panels,
    pub(super) worker: Worker,
    pub(super) dialogs: DialogRunner,
    /// A path asked for in the studio's own window, where no file dialog could open.
    path_request: Option<PathRequest>,
    /// The artist was told why paths are asked for in a window.
    told_no_dialog: bool,
    pub(super) textures: Textures,
    commands: Commands,
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
            dialogs: {
                let ctx = cc.egui_ctx.clone();
                DialogRunner::new(options.dialogs, std::sync::Arc::new(move || ctx.request_repaint()))
            },
            path_request: None,
            told_no_dialog: false,
            textures: Textures::default(),
            panels: Panels::default(),
            commands: Commands::default(),
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
            app.run_command(UiCommand::LoadModel(m));
        }
        app.inspect_stack();
        app
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
            self.run_command(UiCommand::LoadModel(source));
        }
    }

    /// How long the last frame's layout took (for the frame-time benchmark and the status bar).
    pub fn last_frame_time(&self) -> Option<Duration> {
        self.last_frame
    }

    fn drain_events(&mut self, ctx: &egui::Context) {
        while let Some(event) = self.worker.try_recv() {
            self.state.apply(event);
        }
        for answer in self.dialogs.answers() {
            match answer {
                Answer::Chosen(command) => self.run_command(command),
                Answer::Unavailable(request) => {
                    // Said once a session: the window that asks for the path explains itself.
                    if !std::mem::replace(&mut self.told_no_dialog, true) {
                        self.state.info(
                            "No file dialog could open on this system (it needs xdg-desktop-portal or zenity), so Easel asks for paths in a window of its own",
                        );
                    }
                    self.path_request = Some(request);
                }
            }
        }
        if self.worker.has_stopped() {
            self.restart_worker(ctx);
        }
        if std::mem::take(&mut self.state.recheck_loras) {
            self.inspect_stack();
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
                self.run_command(UiCommand::ImportSettings(path));
            }
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
            super::controls::presets_menu_ui(ui, &self.state, &mut self.panels.presets, &mut self.commands);
        });
    }

    /// Messages, newest first, each wrapped to the window's width and dismissable; a long list
    /// scrolls in a band of its own instead of pushing the panels down.
    fn notices_ui(&mut self, ui: &mut Ui) {
        let notices = &mut self.state.notices;
        let mut dismiss = None;
        egui::ScrollArea::vertical().max_height(110.0).auto_shrink([false, true]).show(ui, |ui| {
            for (i, notice) in notices.iter().enumerate().rev() {
                ui.horizontal(|ui| {
                    let color =
                        if notice.is_error { ui.visuals().error_fg_color } else { ui.visuals().text_color() };
                    if ui.small_button("×").on_hover_text("Dismiss").clicked() {
                        dismiss = Some(i);
                    }
                    ui.add(egui::Label::new(egui::RichText::new(&notice.text).color(color)).wrap());
                });
            }
        });
        if let Some(i) = dismiss {
            notices.remove(i);
        }
        if notices.len() > 1 && ui.small_button("Clear all").on_hover_text("Dismiss every message").clicked()
        {
            notices.clear();
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
                    let cancelling = self.state.running().is_some_and(|j| j.is_cancelled());
                    let eta = if cancelling { "cancelling…".to_string() } else { eta };
                    ui.label(format!("{label} · {elapsed_secs:.1} s · {eta}"));
                }
                _ if matches!(self.state.eval, super::state::EvalStatus::Running { .. }) => {
                    if let super::state::EvalStatus::Running { stage, done, total, .. } = &self.state.eval {
                        ui.label(format!("Metrics comparison: {stage} · {done}/{total} pictures"));
                    }
                }
                _ => {
                    ui.label(match &self.state.model {
                        super::state::ModelStatus::Ready(m) => {
                            format!("Ready · {} ({}, {}, {})", m.name, m.family, m.device, m.precision)
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
        self.live_tick(&ctx);
        self.dropped_files(&ctx);
        egui::Panel::top("top").show(ui, |ui| {
            self.top_bar_ui(ui);
            if !self.state.notices.is_empty() {
                self.notices_ui(ui);
            }
        });
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar_ui(ui));
        let (state, panels, textures, out) =
            (&mut self.state, &mut self.panels, &mut self.textures, &mut self.commands);
        egui::Panel::left("controls").resizable(true).default_size(340.0).show(ui, |ui| {
            super::controls::controls_ui(ui, state, panels, &self.canvas, out);
        });
        egui::CentralPanel::default().show(ui, |ui| match state.settings.tab {
            _ if matches!(state.model, super::state::ModelStatus::None)
                && state.history.items.is_empty()
                && state.settings.tab == Tab::Image =>
            {
                super::controls::first_run_ui(ui, out)
            }
            Tab::Image => super::gallery::image_tab_ui(ui, state, &mut panels.image, textures, out),
            Tab::Gallery => super::gallery::gallery_tab_ui(ui, state, textures, out),
            Tab::Compare => super::compare::compare_tab_ui(ui, state, &mut panels.compare, textures, out),
            Tab::Metrics => super::metrics_view::metrics_tab_ui(ui, state, &mut panels.metrics, out),
            Tab::Canvas => super::canvas::canvas_tab_ui(ui, &mut self.canvas, state, out),
        });
        if let Some(request) = &mut self.path_request {
            match path_window(&ctx, request) {
                Some(true) => {
                    if let Some(request) = self.path_request.take() {
                        out.push(request.finish());
                    }
                }
                Some(false) => self.path_request = None,
                None => {}
            }
        }
        if panels.lora_browser.open {
            super::lora_panel::lora_browser_window(&ctx, state, &mut panels.lora_browser, textures, out);
        }
        for command in self.commands.take() {
            self.run_command(command);
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

/// The window asking for a path by hand: `Some(true)` when it is given, `Some(false)` when the
/// artist gives up.
fn path_window(ctx: &egui::Context, request: &mut PathRequest) -> Option<bool> {
    let mut done = None;
    let window = egui::Window::new(request.title).collapsible(false);
    window.anchor(egui::Align2::CENTER_TOP, egui::vec2(0.0, 80.0)).show(ctx, |ui| {
        ui.label("Type the path of the file or folder:");
        let label = ui.label("Path");
        let field =
            ui.add(egui::TextEdit::singleline(&mut request.text).desired_width(360.0)).labelled_by(label.id);
        if !std::mem::replace(&mut request.focused, true) {
            field.request_focus();
        }
        let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        ui.horizontal(|ui| {
            if ui.add_enabled(!request.text.trim().is_empty(), egui::Button::new("OK")).clicked()
                || (entered && !request.text.trim().is_empty())
            {
                done = Some(true);
            }
            if ui.button("Cancel").clicked() {
                done = Some(false);
            }
        });
    });
    done
}

/// The worker thread, waking this window after each event.
fn spawn_worker(ctx: &egui::Context) -> std::io::Result<Worker> {
    let ctx = ctx.clone();
    Worker::spawn(Box::new(move || ctx.request_repaint()))
}
