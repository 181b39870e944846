//! Carrying out panels' commands: the one place in the studio that sends work to the worker,
//! opens file dialogs, starts downloads and writes exports. Each command ends either in work
//! queued or in a notice saying what happened, so no click goes unanswered.

use std::path::{Path, PathBuf};

use super::app::EaselApp;
use super::command::{MetricsPath, TableFormat, UiCommand};
use super::dialogs::Ask;
use super::state::{CanvasUse, Download, EvalStatus, JobKind, ModelStatus};
use crate::engine::device::DeviceChoice;
use crate::presets::Preset;
use crate::worker::{Command, GenerateJob};

/// Pictures the canvas can load.
const PICTURE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "bmp"];

impl EaselApp {
    /// Carries out one command from a panel (or a test).
    pub fn run_command(&mut self, command: UiCommand) {
        match command {
            UiCommand::LoadModel(source) => self.load_model(source),
            UiCommand::ReloadModel => {
                if let ModelStatus::Ready(m) = &self.state.model {
                    let source = m.source.clone();
                    self.load_model(source);
                }
            }
            UiCommand::ChooseModelFile => {
                let ask =
                    Ask::File { title: "Stable Diffusion checkpoint", extensions: &["safetensors", "ckpt"] };
                self.ask(ask, |p| UiCommand::LoadModel(p.display().to_string()));
            }
            UiCommand::ChooseVae => {
                let ask = Ask::File { title: "VAE", extensions: &["safetensors", "pt", "ckpt", "bin"] };
                self.ask(ask, |p| UiCommand::SetVae(Some(p)));
            }
            UiCommand::SetVae(vae) => self.state.settings.vae = vae,
            UiCommand::ChooseModelFolder => {
                self.ask(Ask::Folder { title: "Diffusers model folder" }, |p| {
                    UiCommand::LoadModel(p.display().to_string())
                });
            }
            UiCommand::PullModel => {
                let repo_id = self.state.settings.hub_repo.trim().to_string();
                self.state.pull = Some(Download::starting(&repo_id));
                let precision = self.state.settings.precision;
                self.send(Command::PullModel { repo_id, precision });
            }
            UiCommand::PullPreviewDecoder => {
                let family = self.state.model.family();
                self.state.pull = Some(Download::starting(crate::hub::preview_decoder_repo(family)));
                self.send(Command::PullPreviewDecoder(family));
            }
            UiCommand::ChooseLiveLora => {
                let ask = Ask::File { title: "Few-step LoRA for live frames", extensions: &["safetensors"] };
                self.ask(ask, UiCommand::SetLiveLora);
            }
            UiCommand::SetLiveLora(path) => self.state.settings.live.lora = Some(path),
            UiCommand::GetLiveLora(repo_id, file) => match crate::hub::cached_repo_file(&repo_id, &file) {
                Some(path) => self.state.settings.live.lora = Some(path),
                None => {
                    self.state.pull = Some(Download::starting(&repo_id));
                    self.send(Command::PullLiveLora { repo_id, file });
                }
            },
            UiCommand::KeepLive => self.keep_live(),
            UiCommand::InspectLoras(paths) => {
                for path in paths {
                    self.send(Command::InspectLora { path });
                }
            }
            UiCommand::ChooseLoraFile => {
                self.ask(
                    Ask::File { title: "LoRA adapter", extensions: &["safetensors"] },
                    UiCommand::AddLora,
                );
            }
            UiCommand::AddLora(path) => self.add_lora(path),
            UiCommand::ChooseLoraFolder => {
                self.ask(Ask::Folder { title: "LoRA folder" }, UiCommand::SetLoraFolder)
            }
            UiCommand::SetLoraFolder(dir) => self.state.settings.lora_dir = dir.display().to_string(),
            UiCommand::ChooseControlNet(i) => {
                let ask =
                    Ask::File { title: "ControlNet", extensions: &["safetensors", "pth", "ckpt", "bin"] };
                self.ask(ask, move |p| UiCommand::SetControlNet(i, p));
            }
            UiCommand::SetControlNet(i, path) => {
                // A diffusers ControlNet is a folder: choosing its config or weights means the folder.
                let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let folder = path.parent().filter(|d| d.join("config.json").is_file());
                let path = match folder {
                    Some(dir) if name == "config.json" || name.starts_with("diffusion_pytorch_model") => {
                        dir.to_path_buf()
                    }
                    _ => path,
                };
                if let Some(slot) = self.state.settings.controls.get_mut(i) {
                    slot.spec.model = path;
                }
            }
            UiCommand::PullControlNet(i) => {
                let Some(slot) = self.state.settings.controls.get(i) else { return };
                let repo_id = slot.hub_id.trim().to_string();
                if !crate::hub::looks_like_repo_id(&repo_id) {
                    self.state.error(format!(
                        "\"{repo_id}\" is not a hub id; type one such as lllyasviel/control_v11p_sd15_scribble"
                    ));
                    return;
                }
                self.state.pull = Some(Download::starting(&repo_id));
                self.send(Command::PullControlNet { repo_id, unit: i });
            }
            UiCommand::ChooseControlPicture(i) => {
                let ask = Ask::File {
                    title: "Control picture",
                    extensions: &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"],
                };
                self.ask(ask, move |p| UiCommand::SetControlPicture(i, p));
            }
            UiCommand::SetControlPicture(i, path) => {
                if let Some(slot) = self.state.settings.controls.get_mut(i) {
                    slot.source = super::control_panel::ControlSource::File(path);
                }
            }
            UiCommand::Generate => self.generate(),
            UiCommand::CancelAll => self.state.cancel_all(),
            UiCommand::CancelJob(id) => self.state.cancel_job(id),
            UiCommand::QueueGrid => self.queue_grid(),
            UiCommand::ExportGrid => {
                let ask = Ask::Save { title: "Export grid", default_name: "lora-grid.png".into() };
                self.ask(ask, UiCommand::ExportGridTo);
            }
            UiCommand::ExportGridTo(dest) => self.export_grid(&with_extension(dest, "png")),
            UiCommand::ExportPicture(id) => {
                let Some(item) = self.state.history.get(id) else { return };
                let name =
                    item.path.file_name().map_or("easel.png".into(), |n| n.to_string_lossy().to_string());
                self.ask(Ask::Save { title: "Export picture", default_name: name }, move |dest| {
                    UiCommand::ExportPictureTo(id, dest)
                });
            }
            UiCommand::ExportPictureTo(id, dest) => self.export_picture(id, &with_extension(dest, "png")),
            UiCommand::ExportMarked => {
                self.ask(Ask::Folder { title: "Export ticked pictures to" }, UiCommand::ExportMarkedTo);
            }
            UiCommand::ExportMarkedTo(dir) => self.export_marked(&dir),
            UiCommand::UseSettingsOf(id) => self.use_settings_of(id),
            UiCommand::DeletePicture(id) => self.delete_picture(id),
            UiCommand::RevealPicture(id) => self.reveal_picture(id),
            UiCommand::ChooseImportPicture => {
                let ask = Ask::File { title: "Picture with settings", extensions: &["png"] };
                self.ask(ask, UiCommand::ImportSettings);
            }
            UiCommand::ImportSettings(path) => self.import_settings(&path),
            UiCommand::ApplyPreset(name) => self.apply_preset(&name),
            UiCommand::SavePreset(name) => self.save_preset(&name),
            UiCommand::ChooseMetricsPath(which) => {
                let ask = match which {
                    MetricsPath::References => Ask::Folder { title: "Reference pictures" },
                    MetricsPath::Prompts => Ask::File { title: "Prompt list", extensions: &["txt"] },
                    MetricsPath::Inception => {
                        Ask::File { title: "FID Inception weights", extensions: &["pth", "safetensors"] }
                    }
                };
                self.ask(ask, move |p| UiCommand::SetMetricsPath(which, p));
            }
            UiCommand::SetMetricsPath(which, path) => self.set_metrics_path(which, &path),
            UiCommand::RunComparison => self.run_comparison(),
            UiCommand::StopComparison => {
                if let EvalStatus::Running { cancel, .. } = &self.state.eval {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            UiCommand::ExportMetrics(format) => {
                let name = format!("easel-metrics.{}", format.extension());
                self.ask(Ask::Save { title: "Export metrics", default_name: name }, move |dest| {
                    UiCommand::ExportMetricsTo(format, dest)
                });
            }
            UiCommand::ExportMetricsTo(format, dest) => {
                self.export_metrics(format, &with_extension(dest, format.extension()))
            }
            UiCommand::ChooseCanvasPicture => {
                let ask = Ask::File { title: "Picture", extensions: &PICTURE_EXTENSIONS };
                self.ask(ask, UiCommand::LoadCanvasPicture);
            }
            UiCommand::LoadCanvasPicture(p) => self.load_canvas_picture(&p),
            UiCommand::SelectedToCanvas => {
                let path =
                    self.state.selected.and_then(|id| self.state.history.get(id)).map(|i| i.path.clone());
                if let Some(p) = path {
                    self.load_canvas_picture(&p);
                }
            }
        }
    }

    /// Opens a file dialog on its own thread; the chosen path comes back as `then(path)`.
    fn ask(&mut self, ask: Ask, then: impl FnOnce(PathBuf) -> UiCommand + Send + 'static) {
        if let Err(e) = self.dialogs.ask(ask, then) {
            self.state.error(e);
        }
    }

    /// Sends a command to the worker, showing why if it cannot take it. The studio's only road
    /// to the worker.
    pub(super) fn send(&mut self, command: Command) {
        if let Err(e) = self.worker.send(command) {
            self.state.error(e);
        }
    }

    /// Loads a model on the worker in the chosen precision.
    pub(super) fn load_model(&mut self, source: String) {
        let precision = self.state.settings.precision;
        self.send(Command::LoadModel { source, device: DeviceChoice::Auto, precision });
    }

    fn add_lora(&mut self, path: PathBuf) {
        if self.state.settings.loras.iter().any(|s| s.path == path) {
            self.state.info(format!("{} is already in the stack", path.display()));
            return;
        }
        self.state.settings.loras.push(super::state::LoraSlot::new(path.clone()));
        self.send(Command::InspectLora { path });
    }

    /// Asks the worker to read every adapter of the stack again (after the stack was replaced).
    pub(super) fn inspect_stack(&mut self) {
        let paths: Vec<PathBuf> = self.state.settings.loras.iter().map(|s| s.path.clone()).collect();
        self.run_command(UiCommand::InspectLoras(paths));
    }

    /// Queues the current settings as a render (the Generate button).
    fn generate(&mut self) {
        if !matches!(self.state.model, ModelStatus::Ready(_)) {
            self.state.error("Open a model first: choose a file or folder, or pull one from the hub.");
            return;
        }
        if !self.state.settings.seed_locked {
            self.state.settings.seed = crate::engine::request::random_seed();
        }
        let mut request = self.state.settings.request();
        if let Err(e) = request.validate() {
            self.state.error(e.in_studio_words());
            return;
        }
        let (mut init_image, mut mask) = (None, None);
        if self.state.settings.canvas_use != CanvasUse::Off {
            let (cw, ch) = self.canvas.size_px();
            if (cw as usize, ch as usize) != (request.width, request.height) {
                self.state.info(format!(
                    "The {cw}×{ch} canvas is scaled to the generation size, {}×{}, for this picture",
                    request.width, request.height
                ));
            }
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
                    self.state.error(e.in_studio_words());
                    return;
                }
            }
        }
        if let Err(e) = self.canvas_units(&mut request) {
            self.state.error(e.in_studio_words());
            return;
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

    /// Points ControlNet units that read the canvas at a saved copy of it, as it is now, so the
    /// job and the history make the same picture again.
    fn canvas_units(&mut self, request: &mut crate::engine::GenerationRequest) -> crate::error::Result<()> {
        if request.controls.iter().all(|u| u.image.is_some()) {
            return Ok(());
        }
        let inputs =
            self.canvas.inputs(&self.state.paths.inputs(), request.width as u32, request.height as u32)?;
        for unit in request.controls.iter_mut().filter(|u| u.image.is_none()) {
            unit.image = Some(inputs.image_path.clone());
        }
        Ok(())
    }

    fn queue_grid(&mut self) {
        let (grid, mut cells) = match super::compare::grid_cells(&self.state) {
            Ok(g) => g,
            Err(e) => return self.state.error(e),
        };
        for (_, _, request) in &mut cells {
            if let Err(e) = self.canvas_units(request) {
                return self.state.error(e.in_studio_words());
            }
        }
        self.state.grid = grid;
        let output_dir = self.state.paths.gallery();
        for (row, col, request) in cells {
            let saved_prompt = crate::engine::lora::tags::prompt_with_tags(&request.prompt, &request.loras);
            let label = format!("grid {} / seed {}", self.state.grid.rows[row], request.seed);
            let (id, cancel) = self.state.enqueue(label, 1, JobKind::GridCell { row, col });
            self.send(Command::Generate(Box::new(GenerateJob {
                id,
                request,
                saved_prompt,
                init_image: None,
                mask: None,
                cancel,
                output_dir: output_dir.clone(),
            })));
        }
    }

    fn export_grid(&mut self, dest: &Path) {
        let (picture, text) = match super::compare::grid_picture(&self.state) {
            Ok(p) => p,
            Err(e) => return self.state.error(format!("The grid cannot be exported: {e}")),
        };
        match crate::export::png::save_png(dest, &picture, &[("Description".into(), text)], false) {
            Ok(()) => self.state.info(format!("Exported the grid to {}", dest.display())),
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }

    fn export_picture(&mut self, id: u64, dest: &Path) {
        let Some(item) = self.state.history.get(id) else { return };
        match copy_new(&item.path, dest) {
            Ok(()) => self.state.info(format!("Exported {}", dest.display())),
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }

    fn export_marked(&mut self, dir: &Path) {
        let (mut done, mut skipped) = (0, Vec::new());
        for id in self.state.marked.clone() {
            let Some(item) = self.state.history.get(id) else { continue };
            let name = item.path.file_name().map_or(format!("{id}.png"), |n| n.to_string_lossy().to_string());
            match copy_new(&item.path, &dir.join(&name)) {
                Ok(()) => done += 1,
                Err(e) => skipped.push(e.in_studio_words()),
            }
        }
        if skipped.is_empty() {
            self.state.info(format!("Exported {done} picture(s) to {}", dir.display()));
        } else {
            self.state.error(format!("Exported {done}; not exported: {}", skipped.join("; ")));
        }
    }

    /// Moves the picture's file into `gallery/.trash` (a file that is already gone is only taken
    /// out of the gallery) and forgets it everywhere the session refers to it.
    fn delete_picture(&mut self, id: u64) {
        let Some(item) = self.state.history.get(id) else { return };
        let path = item.path.clone();
        if path.exists() {
            let trash = self.state.paths.gallery().join(".trash");
            let name = path.file_name().map_or(format!("{id}.png"), |n| n.to_string_lossy().to_string());
            let moved =
                std::fs::create_dir_all(&trash).and_then(|()| std::fs::rename(&path, trash.join(&name)));
            if let Err(e) = moved {
                let e = crate::Error::io("cannot move the picture to the trash folder", e, &path);
                return self.state.error(e.in_studio_words());
            }
            self.state.info(format!("Picture #{id} moved to {}", trash.display()));
        }
        self.state.forget_picture(id);
    }

    /// Opens the folder of the picture's file in the system's file manager.
    fn reveal_picture(&mut self, id: u64) {
        let Some(item) = self.state.history.get(id) else { return };
        let dir = item.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else if cfg!(windows) {
            "explorer"
        } else {
            "xdg-open"
        };
        // Spawned, not waited on: the file manager runs on its own.
        if let Err(e) = std::process::Command::new(opener).arg(&dir).spawn() {
            let path = item.path.display();
            self.state
                .error(format!("No file manager could be opened ({opener}: {e}); the picture is {path}"));
        }
    }

    fn use_settings_of(&mut self, id: u64) {
        let Some(item) = self.state.history.get(id) else { return };
        // The saved prompt carries the LoRA tags; the request's stack is the exact one.
        let request =
            crate::engine::GenerationRequest { prompt: item.saved_prompt.clone(), ..item.request.clone() };
        self.state.settings.use_request(&request);
        self.state.recheck_loras = true;
        self.state.info(format!("Settings of picture {id} restored"));
    }

    /// Takes the generation settings from a PNG (drag and drop, or the Import button).
    fn import_settings(&mut self, path: &Path) {
        match crate::export::import::import_png(path) {
            Ok(imported) => {
                self.state.settings.use_request(&imported.request);
                let name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().to_string());
                self.state.info(format!("Settings taken from {name} ({} metadata)", imported.source));
                self.inspect_stack();
            }
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }

    fn apply_preset(&mut self, name: &str) {
        let dir = self.state.paths.presets();
        match crate::presets::load_from(&dir, name) {
            Ok(preset) => {
                self.state.settings.apply_preset(&preset);
                if !preset.loras.is_empty() {
                    self.inspect_stack();
                }
                self.state.info(format!("Preset {} applied", preset.name));
            }
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }

    fn save_preset(&mut self, name: &str) {
        let s = &self.state.settings;
        let preset = Preset {
            name: name.to_string(),
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
            spacing: s.spacing,
            prompt: Some(s.prompt.clone()),
            loras: s.loras.iter().filter(|l| l.enabled).map(|l| l.spec()).collect(),
        };
        match crate::presets::save(&self.state.paths.presets(), name, &preset, false) {
            Ok(path) => self.state.info(format!("Saved the preset {}", path.display())),
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }

    fn set_metrics_path(&mut self, which: MetricsPath, path: &Path) {
        let form = &mut self.state.settings.metrics;
        let field = match which {
            MetricsPath::References => &mut form.reference_dir,
            MetricsPath::Prompts => &mut form.prompt_file,
            MetricsPath::Inception => &mut form.inception,
        };
        *field = path.display().to_string();
    }

    fn run_comparison(&mut self) {
        match super::metrics_view::comparison_job(&self.state) {
            Ok(job) => {
                let cancel = std::sync::Arc::clone(&job.cancel);
                self.state.eval = EvalStatus::Running { stage: "starting".into(), done: 0, total: 1, cancel };
                self.send(Command::Evaluate(Box::new(job)));
            }
            Err(e) => self.state.error(e),
        }
    }

    fn export_metrics(&mut self, format: TableFormat, dest: &Path) {
        let EvalStatus::Done(results) = &self.state.eval else { return };
        let text = match super::metrics_view::table_text(results, format) {
            Ok(t) => t,
            Err(e) => return self.state.error(e),
        };
        match crate::files::write_atomically(dest, text.as_bytes(), false) {
            Ok(()) => self.state.info(format!("Exported {}", dest.display())),
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }

    fn load_canvas_picture(&mut self, path: &Path) {
        match crate::metrics::images::read_rgb(path) {
            Ok(picture) => {
                self.canvas.load(&picture);
                let (w, h) = self.canvas.size_px();
                (self.state.settings.width, self.state.settings.height) = (w as usize, h as usize);
            }
            Err(e) => self.state.error(e.in_studio_words()),
        }
    }
}

/// A short queue label: the prompt's start, the batch and seed.
pub(super) fn job_label(prompt: &str, batch: usize, seed: u64) -> String {
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

/// `path`, with `.extension` added when it has none (a name typed without it).
fn with_extension(path: PathBuf, extension: &str) -> PathBuf {
    if path.extension().is_some() {
        path
    } else {
        path.with_extension(extension)
    }
}

/// Copies a gallery PNG (metadata included) to `dest`, atomically and never over an existing file.
fn copy_new(src: &Path, dest: &Path) -> crate::Result<()> {
    let bytes =
        std::fs::read(src).map_err(|e| crate::Error::io("cannot read the gallery picture", e, src))?;
    crate::files::write_atomically(dest, &bytes, false)
}
