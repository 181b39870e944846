//! The worker's loop and its model state: loading and downloading models, reading adapters, and
//! keeping the merged LoRA stack so consecutive jobs with the same stack merge nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use super::preview::{PreviewKind, Previewer};
use super::{Command, Event, LoraInfo, ModelInfo, Outbox};
use crate::engine::device::{DeviceChoice, Precision};
use crate::engine::lora::{self, Adapter, StackEntry};
use crate::engine::{Family, LoraSpec, StableDiffusion};
use crate::error::{Error, Result};

/// The model and what is merged into it.
pub(crate) struct Loaded {
    pub model: StableDiffusion,
    pub info: ModelInfo,
    /// A1111's short hash of a single-file checkpoint.
    pub model_hash: Option<String>,
    /// The stack merged now (enabled entries, in order); `None` after a merge failed half-way.
    pub merged: Option<Vec<LoraSpec>>,
    /// Draws the live previews.
    pub preview: Previewer,
    /// ControlNets read for this model, kept between jobs.
    pub controlnets: crate::engine::controlnet::ControlNetCache,
    /// The last live frame's text embeddings (a new model starts without).
    pub live_texts: crate::engine::live::TextCache,
}

/// Everything the worker keeps between commands.
#[derive(Default)]
pub(crate) struct State {
    pub loaded: Option<Loaded>,
    adapters: HashMap<PathBuf, Arc<Adapter>>,
}

/// The thread body: runs commands until the window drops its handle. A command that panics
/// (a bug, or an input no check foresaw) ends as that command's failure event and the loop goes
/// on: the window must never wait forever on a dead thread while the artist's work is open.
pub(crate) fn run(commands: Receiver<Command>, outbox: Outbox, model: Option<Loaded>) {
    let mut state = State::default();
    if let Some(loaded) = model {
        outbox.send(Event::ModelLoaded(loaded.info.clone()));
        state.loaded = Some(loaded);
    }
    while let Ok(command) = commands.recv() {
        let failed = Failure::of(&command);
        guarded(&mut state, &outbox, failed, |state, outbox| execute(state, outbox, command));
    }
}

/// Runs one command's work; a panic inside becomes `failed`'s event (see [`recover`]).
pub(crate) fn guarded(
    state: &mut State,
    outbox: &Outbox,
    failed: Failure,
    work: impl FnOnce(&mut State, &Outbox),
) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut *state, outbox)));
    if let Err(panic) = ran {
        recover(state, outbox, failed, panic.as_ref());
    }
}

/// Which failure event a command's panic becomes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    Load(String),
    Pull(String),
    Inspect(PathBuf),
    Job(super::JobId),
    Live(super::JobId),
    Evaluate,
}

impl Failure {
    fn of(command: &Command) -> Self {
        match command {
            Command::LoadModel { source, .. } => Failure::Load(source.clone()),
            Command::PullModel { repo_id, .. } => Failure::Pull(repo_id.clone()),
            Command::PullPreviewDecoder(family) => {
                Failure::Pull(crate::hub::preview_decoder_repo(*family).to_string())
            }
            Command::PullControlNet { repo_id, .. } => Failure::Pull(repo_id.clone()),
            Command::PullLiveLora { repo_id, .. } => Failure::Pull(repo_id.clone()),
            Command::InspectLora { path } => Failure::Inspect(path.clone()),
            Command::Generate(job) => Failure::Job(job.id),
            Command::Live(job) => Failure::Live(job.id),
            Command::Evaluate(_) => Failure::Evaluate,
        }
    }
}

/// Reports a panicked command as its failure and leaves the state safe for the next one: a
/// merge cut short leaves an unknown mix of weights, so the next job merges again from the
/// pristine ones.
fn recover(state: &mut State, outbox: &Outbox, failed: Failure, panic: &(dyn std::any::Any + Send)) {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no details".into());
    let message = format!(
        "Easel hit an internal error and stopped this task ({detail}); the studio goes on — please report it"
    );
    if let Some(loaded) = &mut state.loaded {
        loaded.merged = None;
    }
    let was_load = matches!(failed, Failure::Load(_));
    outbox.send(match failed {
        Failure::Load(source) => Event::ModelFailed { source, message },
        Failure::Pull(repo_id) => Event::PullFailed { repo_id, message },
        Failure::Inspect(path) => Event::LoraInspected(Err((path, message))),
        Failure::Job(id) => Event::JobFinished { id, outcome: super::JobOutcome::Failed(message) },
        Failure::Live(id) => Event::LiveStopped { id, outcome: super::JobOutcome::Failed(message) },
        Failure::Evaluate => Event::EvalFailed { message },
    });
    // As after a load that fails normally: the previous model is still loaded and usable.
    if let (true, Some(previous)) = (was_load, &state.loaded) {
        outbox.send(Event::ModelLoaded(previous.info.clone()));
    }
}

fn execute(state: &mut State, outbox: &Outbox, command: Command) {
    match command {
        Command::LoadModel { source, device, precision } => load(state, outbox, source, device, precision),
        Command::PullModel { repo_id, precision } => pull(state, outbox, repo_id, precision),
        Command::PullPreviewDecoder(family) => pull_preview_decoder(state, outbox, family),
        Command::PullControlNet { repo_id, unit } => pull_controlnet(outbox, repo_id, unit),
        Command::PullLiveLora { repo_id, file } => {
            let pulled = {
                let mut report = progress_events(outbox, &repo_id);
                crate::hub::pull_file(&repo_id, &file, Some(&mut report))
            };
            outbox.send(match pulled {
                Ok(path) => Event::LiveLoraPulled { repo_id, path },
                Err(e) => Event::PullFailed { repo_id, message: e.in_studio_words() },
            });
        }
        Command::InspectLora { path } => {
            let info = inspect(state, &path).map_err(|e| (path, e.in_studio_words()));
            outbox.send(Event::LoraInspected(info));
        }
        Command::Generate(job) => super::generate::run(state, outbox, *job),
        Command::Live(job) => super::live::run(state, outbox, *job),
        Command::Evaluate(job) => super::evaluate::run(state, outbox, *job),
    }
}

fn load(state: &mut State, outbox: &Outbox, source: String, device: DeviceChoice, precision: Precision) {
    outbox.send(Event::ModelLoading { source: source.clone() });
    match load_model(&source, device, precision) {
        Ok(loaded) => {
            outbox.send(Event::ModelLoaded(loaded.info.clone()));
            state.loaded = Some(loaded);
        }
        Err(e) => {
            outbox.send(Event::ModelFailed { source, message: e.in_studio_words() });
            // The previous model is still loaded and usable; say so.
            if let Some(previous) = &state.loaded {
                outbox.send(Event::ModelLoaded(previous.info.clone()));
            }
        }
    }
}

fn load_model(source: &str, device: DeviceChoice, precision: Precision) -> Result<Loaded> {
    let started = Instant::now();
    let path = crate::hub::resolve_model(source)?;
    let device = device.open()?;
    let dtype = precision.dtype_on(&device)?;
    let model = StableDiffusion::load(&path, &device, dtype)?;
    let model_hash = crate::job::model_hash(&path)?;
    Ok(Loaded::new(model, source, precision, started.elapsed().as_secs_f64(), model_hash))
}

impl Loaded {
    /// A model as the worker keeps it, with its preview decoder and nothing merged.
    pub(crate) fn new(
        model: StableDiffusion,
        source: &str,
        precision: Precision,
        load_secs: f64,
        model_hash: Option<String>,
    ) -> Self {
        let (preview, preview_kind) = Previewer::load(None, &model.device, model.dtype, model.family);
        let info = ModelInfo {
            source: source.to_string(),
            name: model.name.clone(),
            family: model.family,
            inpainting: model.is_inpainting(),
            device: format!("{:?}", model.device.location()).to_lowercase(),
            precision,
            load_secs,
            preview: preview_kind,
        };
        Self {
            model,
            info,
            model_hash,
            merged: Some(Vec::new()),
            preview,
            controlnets: Default::default(),
            live_texts: Default::default(),
        }
    }
}

/// A download progress callback that sends a few events a second for `repo_id`.
fn progress_events<'a>(outbox: &'a Outbox, repo_id: &'a str) -> impl FnMut(&str, u64, u64) + Send + 'a {
    let mut last_sent = Instant::now();
    move |file: &str, done: u64, total: u64| {
        // A progress event per network read would flood the window; five a second is smooth.
        if done == total || last_sent.elapsed().as_millis() >= 200 {
            last_sent = Instant::now();
            outbox.offer(Event::PullProgress {
                repo_id: repo_id.to_string(),
                file: file.to_string(),
                done_bytes: done,
                total_bytes: total,
            });
        }
    }
}

fn pull(state: &mut State, outbox: &Outbox, repo_id: String, precision: Precision) {
    let id = repo_id.clone();
    let mut report = progress_events(outbox, &id);
    // With f16 chosen, the fp16 variant files are half the download (bf16 keeps f32's range, so it
    // is made from the full files).
    let pulled = crate::hub::pull_reporting(&repo_id, precision == Precision::F16, Some(&mut report));
    drop(report);
    match pulled {
        Ok(_) => load(state, outbox, repo_id, DeviceChoice::Auto, precision),
        Err(e) => outbox.send(Event::PullFailed { repo_id, message: e.in_studio_words() }),
    }
}

fn pull_preview_decoder(state: &mut State, outbox: &Outbox, family: Family) {
    let repo_id = crate::hub::preview_decoder_repo(family);
    let mut report = progress_events(outbox, repo_id);
    match crate::hub::pull_preview_decoder(family, Some(&mut report)) {
        Ok(path) => {
            let kind = match &mut state.loaded {
                Some(loaded) if loaded.model.family == family => {
                    let (preview, kind) =
                        Previewer::load(Some(path), &loaded.model.device, loaded.model.dtype, family);
                    loaded.preview = preview;
                    loaded.info.preview = kind.clone();
                    kind
                }
                // The next model of this family finds it.
                _ => PreviewKind::TinyDecoder(path),
            };
            outbox.send(Event::PreviewDecoderReady(kind));
        }
        Err(e) => {
            outbox.send(Event::PullFailed { repo_id: repo_id.to_string(), message: e.in_studio_words() })
        }
    }
}

/// Downloads a ControlNet repository (the fp16 weights where published: they are read into the
/// model's precision anyway) with progress events.
fn pull_controlnet(outbox: &Outbox, repo_id: String, unit: usize) {
    let pulled = {
        let mut report = progress_events(outbox, &repo_id);
        crate::hub::pull_reporting(&repo_id, true, Some(&mut report))
    };
    match pulled {
        Ok(path) => outbox.send(Event::ControlNetPulled { unit, repo_id, path }),
        Err(e) => outbox.send(Event::PullFailed { repo_id, message: e.in_studio_words() }),
    }
}

impl State {
    /// The adapter at `path`, read once per worker (files are re-read only if not seen before).
    pub fn adapter(&mut self, path: &Path) -> Result<Arc<Adapter>> {
        if let Some(a) = self.adapters.get(path) {
            return Ok(Arc::clone(a));
        }
        let adapter = Arc::new(Adapter::load(path)?);
        self.adapters.insert(path.to_path_buf(), Arc::clone(&adapter));
        Ok(adapter)
    }

    /// The stack `specs` describe, merged into the loaded model unless it is merged already;
    /// the reports come back when it merged.
    pub fn merge_stack(
        &mut self,
        specs: &[LoraSpec],
    ) -> Result<(Vec<StackEntry>, Option<Vec<lora::AdapterReport>>)> {
        if self.loaded.is_none() {
            return Err(Error::BadRequest("no model is loaded: open one first".into()));
        }
        let stack = crate::job::stack(specs, |path| self.adapter(path))?;
        let loaded = self.loaded.as_mut().ok_or_else(|| Error::Internal("the model went away".into()))?;
        if loaded.merged.as_deref() == Some(specs) {
            return Ok((stack, None));
        }
        // A failure part-way leaves an unknown mix, so the next job merges again whatever it asks.
        loaded.merged = None;
        let reports = lora::apply(&mut loaded.model, &stack)?;
        loaded.merged = Some(specs.to_vec());
        Ok((stack, Some(reports)))
    }
}

fn inspect(state: &mut State, path: &Path) -> Result<LoraInfo> {
    let adapter = state.adapter(path)?;
    let meta = &adapter.metadata;
    let compatibility = state.loaded.as_ref().map(|l| match lora::check(&adapter, &l.model) {
        Ok(report) => Ok(report.summary()),
        Err(e) => Err(e.in_studio_words()),
    });
    Ok(LoraInfo {
        path: path.to_path_buf(),
        name: adapter.name.clone(),
        title: meta.title.clone(),
        trigger_words: meta.trigger_words.clone(),
        rank: meta.rank,
        thumbnail: meta.thumbnail.as_deref().and_then(decode_data_url),
        compatibility,
    })
}

/// Decodes a `data:image/...;base64,` preview picture.
fn decode_data_url(url: &str) -> Option<image::RgbaImage> {
    use base64::Engine;
    let (_, data) = url.split_once("base64,")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim()).ok()?;
    image::load_from_memory(&bytes).ok().map(|i| i.thumbnail(128, 128).to_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn a_panicking_job_ends_as_its_failure_and_the_next_one_runs() {
        let (tx, rx) = sync_channel(16);
        let outbox = Outbox { events: tx, wake: Box::new(|| {}) };
        let mut state = State::default();
        guarded(&mut state, &outbox, Failure::Job(7), |_, _| panic!("an invariant broke"));
        match rx.try_recv() {
            Ok(Event::JobFinished { id: 7, outcome: super::super::JobOutcome::Failed(message) }) => {
                assert!(
                    message.contains("internal error") && message.contains("an invariant broke"),
                    "{message}"
                )
            }
            _ => panic!("the job's failure is reported"),
        }
        let mut ran = false;
        guarded(&mut state, &outbox, Failure::Evaluate, |_, _| ran = true);
        assert!(ran && rx.try_recv().is_err(), "the next command runs and reports nothing extra");
        guarded(&mut state, &outbox, Failure::Load("m".into()), |_, _| panic!("{}", String::from("owned")));
        assert!(matches!(rx.try_recv(), Ok(Event::ModelFailed { message, .. }) if message.contains("owned")));
    }
}
