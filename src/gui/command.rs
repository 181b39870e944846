//! What panels ask of the studio. A panel edits the settings it shows and its own view state
//! directly, but anything that reaches outside the frame — the worker, a file dialog, a download,
//! the disk — it pushes as a `UiCommand`; `EaselApp::run_command` (in `run.rs`) is the one place
//! that carries them out. Panels can so be tested alone by reading the commands they emit.

use std::path::PathBuf;

use crate::worker::JobId;

/// A request from a panel, carried out after the frame's layout.
#[derive(Clone, Debug, PartialEq)]
pub enum UiCommand {
    /// Load a model: a path or a hub id already pulled.
    LoadModel(String),
    /// Load the current model again (after the precision changed).
    ReloadModel,
    /// Ask which checkpoint file to open, then load it.
    ChooseModelFile,
    /// Ask which diffusers folder to open, then load it.
    ChooseModelFolder,
    /// Ask which standalone VAE file to decode with.
    ChooseVae,
    /// Decode with this standalone VAE, or with the model's own (`None`).
    SetVae(Option<PathBuf>),
    /// Download a diffusers model from the hub (the settings' hub id), then load it.
    PullModel,
    /// Download the tiny preview decoder.
    PullPreviewDecoder,
    /// Ask for the few-step LoRA live frames add to the stack.
    ChooseLiveLora,
    /// Use this LoRA for live frames.
    SetLiveLora(PathBuf),
    /// Use the live preset's LoRA for the loaded model's family, downloading it when it is not
    /// in the hub cache: (repository, file).
    GetLiveLora(String, String),
    /// Render the canvas with the full settings into the gallery (live mode's Keep).
    KeepLive,
    /// Read these adapters' metadata and check them against the model.
    InspectLoras(Vec<PathBuf>),
    /// Ask for an adapter file, then add it to the stack.
    ChooseLoraFile,
    /// Add this adapter to the stack.
    AddLora(PathBuf),
    /// Ask for the folder the LoRA browser lists.
    ChooseLoraFolder,
    /// List this folder in the LoRA browser.
    SetLoraFolder(PathBuf),
    /// Ask for unit N's ControlNet file.
    ChooseControlNet(usize),
    /// Use this ControlNet for unit N.
    SetControlNet(usize, PathBuf),
    /// Download the hub id typed in unit N, then use it there.
    PullControlNet(usize),
    /// Ask for unit N's picture.
    ChooseControlPicture(usize),
    /// Use this picture for unit N.
    SetControlPicture(usize, PathBuf),
    /// Queue the current settings as a render.
    Generate,
    /// Stop the running job and drop the queued ones.
    CancelAll,
    /// Stop or drop one job.
    CancelJob(JobId),
    /// Queue the LoRA × weight × seed grid.
    QueueGrid,
    /// Ask where, then write the finished grid as one PNG.
    ExportGrid,
    /// Write the finished grid as one PNG here.
    ExportGridTo(PathBuf),
    /// Ask where, then copy a gallery picture.
    ExportPicture(u64),
    /// Copy a gallery picture here.
    ExportPictureTo(u64, PathBuf),
    /// Ask for a folder, then copy the ticked gallery pictures.
    ExportMarked,
    /// Copy the ticked gallery pictures into this folder.
    ExportMarkedTo(PathBuf),
    /// Move a gallery picture's file to the gallery's trash folder and take it out of the gallery.
    DeletePicture(u64),
    /// Show a gallery picture's file in the system's file manager.
    RevealPicture(u64),
    /// Take the settings a gallery picture was made with.
    UseSettingsOf(u64),
    /// Ask for a PNG, then take the settings stored in it.
    ChooseImportPicture,
    /// Take the settings stored in this PNG.
    ImportSettings(PathBuf),
    /// Apply a preset by name.
    ApplyPreset(String),
    /// Save the current settings as a preset of this name.
    SavePreset(String),
    /// Ask for a file or folder of the metrics form.
    ChooseMetricsPath(MetricsPath),
    /// Fill a path of the metrics form.
    SetMetricsPath(MetricsPath, PathBuf),
    /// Start the metrics comparison the form describes.
    RunComparison,
    /// Stop the metrics comparison.
    StopComparison,
    /// Ask where, then write the metrics table.
    ExportMetrics(TableFormat),
    /// Write the metrics table here.
    ExportMetricsTo(TableFormat, PathBuf),
    /// Ask for a picture, then load it onto the canvas.
    ChooseCanvasPicture,
    /// Load this picture onto the canvas.
    LoadCanvasPicture(PathBuf),
    /// Put the selected gallery picture on the canvas.
    SelectedToCanvas,
}

/// The metrics form's paths that a dialog can fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsPath {
    /// The reference pictures' folder.
    References,
    /// A prompt list.
    Prompts,
    /// FID's Inception weights.
    Inception,
}

/// How the metrics table is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// One row per configuration.
    Csv,
    /// The whole results, as the CLI's `--json` writes them.
    Json,
}

impl TableFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            TableFormat::Csv => "csv",
            TableFormat::Json => "json",
        }
    }
}

/// The commands panels pushed this frame, in order.
#[derive(Debug, Default)]
pub struct Commands(Vec<UiCommand>);

impl Commands {
    /// Asks for `command` at the end of the frame.
    pub fn push(&mut self, command: UiCommand) {
        self.0.push(command);
    }

    /// The commands so far, leaving none.
    pub fn take(&mut self) -> Vec<UiCommand> {
        std::mem::take(&mut self.0)
    }

    /// The commands so far (tests read them).
    pub fn as_slice(&self) -> &[UiCommand] {
        &self.0
    }
}
