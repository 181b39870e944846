//! The metrics comparison the studio runs: for each configuration (the base model, a LoRA stack,
//! or one adapter at several weights) generate N pictures from a prompt list with fixed seeds,
//! time them and note peak memory, then score every set against the reference folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::loading::State;
use super::{Event, Outbox};
use crate::engine::device::DeviceChoice;
use crate::engine::{GenerationInputs, GenerationRequest, LoraSpec};
use crate::error::{Error, Result};
use crate::export::png::save_png;
use crate::metrics::images::list_pictures;
use crate::metrics::{evaluate, extract_folder, EvalOptions, Extractor, Reference, ResizeMode, SetReport};

/// One configuration to compare.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalConfig {
    /// Its name in the table ("base", "ink 0.5"…); also its folder name.
    pub label: String,
    /// The stack it merges (empty: the base model).
    pub loras: Vec<LoraSpec>,
    /// For weight sweeps: the swept adapter's weight (the plot's x axis).
    pub weight: Option<f64>,
}

/// Where the prompts come from.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptSource {
    /// One prompt for every picture.
    Single(String),
    /// A text file, one prompt a line (blank lines skipped), used in turn.
    File(PathBuf),
    /// `name.txt` beside each reference picture; generated pictures take the reference's name, so
    /// PSNR and SSIM compare each with its own reference.
    Captions,
}

/// A whole comparison.
#[derive(Debug)]
pub struct EvalJob {
    /// The reference pictures.
    pub reference_dir: PathBuf,
    /// Prompts.
    pub prompts: PromptSource,
    /// Configurations, in table order.
    pub configs: Vec<EvalConfig>,
    /// Pictures per configuration (picture i uses seed + i in every configuration).
    pub images_per_config: usize,
    /// Sampler, steps, guidance, size and first seed.
    pub settings: GenerationRequest,
    /// FID Inception weights.
    pub inception: PathBuf,
    /// Each configuration's pictures go in `output_dir/<label>/`.
    pub output_dir: PathBuf,
    /// Stops the comparison between pictures or steps.
    pub cancel: Arc<AtomicBool>,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigResult {
    /// The configuration.
    pub config: EvalConfig,
    /// Its scores.
    pub report: SetReport,
    /// Mean seconds per picture.
    pub secs_per_image: f64,
    /// Peak resident memory while generating it (bytes), where the system reports it.
    pub peak_memory_bytes: Option<u64>,
}

/// The comparison's results.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResults {
    /// The reference folder.
    pub reference_dir: PathBuf,
    /// The model.
    pub model: String,
    /// The settings used.
    pub settings: GenerationRequest,
    /// One row per configuration.
    pub rows: Vec<ConfigResult>,
}

pub(crate) fn run(state: &mut State, outbox: &Outbox, job: EvalJob) {
    match compare(state, outbox, &job) {
        Ok(results) => outbox.send(Event::EvalFinished(Box::new(results))),
        Err(Error::Cancelled) => {
            outbox.send(Event::EvalFailed { message: "the comparison was cancelled".into() })
        }
        Err(e) => outbox.send(Event::EvalFailed { message: e.in_studio_words() }),
    }
}

fn compare(state: &mut State, outbox: &Outbox, job: &EvalJob) -> Result<EvalResults> {
    if !job.reference_dir.is_dir() {
        return Err(Error::not_found("reference folder", &job.reference_dir));
    }
    let references = list_pictures(&job.reference_dir)?;
    let (prompts, names) = prompts_and_names(job, &references)?;
    // Load Inception before generating anything: missing weights should not cost minutes first.
    let device = DeviceChoice::Auto.open()?;
    let cache = crate::metrics::cache::FeatureCache::default_dir();
    let extractor = Extractor::new(&job.inception, &device, ResizeMode::PytorchFid, cache)?;
    let n = names.len();
    let total_units = job.configs.len() * n;
    let mut generated = Vec::new();
    for (c, config) in job.configs.iter().enumerate() {
        outbox.send(Event::EvalProgress {
            stage: format!("generating {}", config.label),
            done: c * n,
            total: total_units,
        });
        if let (_, Some(reports)) = state.merge_stack(&config.loras)? {
            outbox.send(Event::LoraReports { id: 0, reports });
        }
        let dir = job.output_dir.join(folder_name(&config.label));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("cannot create the comparison folder", e, &dir))?;
        crate::memory::reset_peak_rss();
        let started = Instant::now();
        let loaded = state
            .loaded
            .as_ref()
            .ok_or_else(|| Error::BadRequest("no model is loaded: open one first".into()))?;
        for i in 0..n {
            if job.cancel.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            let request = GenerationRequest {
                prompt: prompts[i % prompts.len()].clone(),
                seed: job.settings.seed.wrapping_add(i as u64),
                batch: 1,
                loras: config.loras.clone(),
                init_image: None,
                mask: None,
                noise: None,
                // Configurations are compared on text alone, as for the start picture.
                controls: Vec::new(),
                ..job.settings.clone()
            };
            let images = crate::engine::generate(
                &loaded.model,
                &request,
                &GenerationInputs::default(),
                &mut |_| {},
                &job.cancel,
            )?;
            for img in images {
                save_png(&dir.join(&names[i]), &img.image, &[], true)?;
            }
            outbox.send(Event::EvalProgress {
                stage: format!("generating {}", config.label),
                done: c * n + i + 1,
                total: total_units,
            });
        }
        let secs_per_image = started.elapsed().as_secs_f64() / n.max(1) as f64;
        generated.push((config.clone(), dir, secs_per_image, crate::memory::peak_rss_bytes()));
    }
    outbox.send(Event::EvalProgress {
        stage: "measuring the references".into(),
        done: 0,
        total: references.len(),
    });
    let reference = extract_folder(&extractor, &job.reference_dir, &mut || {})?;
    let options = EvalOptions::default();
    let mut rows = Vec::new();
    for (k, (config, dir, secs_per_image, peak)) in generated.into_iter().enumerate() {
        outbox.send(Event::EvalProgress {
            stage: format!("measuring {}", config.label),
            done: k,
            total: job.configs.len(),
        });
        let set = extract_folder(&extractor, &dir, &mut || {})?;
        let mut report = evaluate(&Reference::Pictures(&reference), &set, &options)?;
        report.name = config.label.clone();
        rows.push(ConfigResult { config, report, secs_per_image, peak_memory_bytes: peak });
    }
    let model = state.loaded.as_ref().map(|l| l.info.name.clone()).unwrap_or_default();
    Ok(EvalResults { reference_dir: job.reference_dir.clone(), model, settings: job.settings.clone(), rows })
}

/// The prompt list and the file name of each picture to generate.
fn prompts_and_names(job: &EvalJob, references: &[PathBuf]) -> Result<(Vec<String>, Vec<String>)> {
    let numbered = |n: usize| (0..n).map(|i| format!("{:04}.png", i + 1)).collect::<Vec<_>>();
    match &job.prompts {
        PromptSource::Single(p) => Ok((vec![p.clone()], numbered(job.images_per_config))),
        PromptSource::File(path) => {
            let text = crate::files::read_text(path)
                .map_err(|e| Error::io("cannot read the prompt list", e, path))?;
            let prompts: Vec<String> =
                text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            if prompts.is_empty() {
                return Err(Error::bad_file("the prompt list is empty: write one prompt per line", path));
            }
            Ok((prompts, numbered(job.images_per_config)))
        }
        PromptSource::Captions => {
            let mut prompts = Vec::new();
            let mut names = Vec::new();
            for r in references.iter().take(job.images_per_config) {
                let caption = r.with_extension("txt");
                let text = crate::files::read_text(&caption).map_err(|_| {
                    Error::bad_file(
                        "has no caption: put the prompt for each reference in a .txt file of the same name",
                        r,
                    )
                })?;
                prompts.push(text.trim().to_string());
                let stem = r.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
                names.push(format!("{stem}.png"));
            }
            if names.is_empty() {
                return Err(Error::not_found("reference pictures", &job.reference_dir));
            }
            Ok((prompts, names))
        }
    }
}

/// A folder name for a label (letters, digits, `-`, `_`, `.`).
fn folder_name(label: &str) -> String {
    label.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// A label's folder under a comparison's output folder.
pub fn config_dir(output_dir: &Path, label: &str) -> PathBuf {
    output_dir.join(folder_name(label))
}
