//! Running one generation job on the worker: merge its LoRA stack (if it changed), generate with a
//! preview after every step, and save each picture into the gallery as soon as it is decoded.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use image::RgbImage;

use super::loading::State;
use super::{Event, GenerateJob, JobOutcome, Outbox};
use crate::engine::{GeneratedImage, GenerationInputs, Progress};
use crate::error::{Error, Result};
use crate::export::png::save_png;
use crate::history::{now_unix, HistoryItem};

pub(crate) fn run(state: &mut State, outbox: &Outbox, job: GenerateJob) {
    let id = job.id;
    if job.cancel.load(Ordering::SeqCst) {
        outbox.send(Event::JobFinished { id, outcome: JobOutcome::Cancelled });
        return;
    }
    outbox.send(Event::JobStarted { id });
    let outcome = match generate(state, outbox, &job) {
        Ok(()) => JobOutcome::Done,
        Err(Error::Cancelled) => JobOutcome::Cancelled,
        Err(e) => JobOutcome::Failed(e.in_studio_words()),
    };
    // The studio may sit idle now: give back what the job's tensors left in the allocator.
    crate::memory::release_unused();
    outbox.send(Event::JobFinished { id, outcome });
}

fn generate(state: &mut State, outbox: &Outbox, job: &GenerateJob) -> Result<()> {
    let (stack, reports) = state.merge_stack(&job.request.loras)?;
    if let Some(reports) = reports {
        outbox.send(Event::LoraReports { id: job.id, reports });
    }
    let loaded = state.loaded.as_mut().ok_or_else(|| Error::BadRequest("no model is loaded".into()))?;
    std::fs::create_dir_all(&job.output_dir)
        .map_err(|e| Error::io("cannot create the gallery folder", e, &job.output_dir))?;
    let (request, controls) = prepare(loaded, &job.request, None, job.mask.as_ref())?;
    let provenance = crate::job::provenance(&loaded.model, loaded.model_hash.clone(), &stack, &request)?;
    let inputs = GenerationInputs {
        init_image: job.init_image.clone(),
        mask: job.mask.clone(),
        noise: None,
        controls,
    };
    let started = Instant::now();
    let preview = &mut loaded.preview;
    preview.start_job();
    let mut on_progress = |p: Progress| {
        let picture = preview.picture(p.denoised.unwrap_or(p.latents), started.elapsed());
        outbox.offer(Event::Progress {
            id: job.id,
            image: p.image,
            step: p.step,
            total: p.total,
            elapsed_secs: started.elapsed().as_secs_f64(),
            preview: picture,
        });
    };
    let mut index = 0u64;
    let mut on_image = |img: GeneratedImage| -> Result<()> {
        let request = crate::engine::GenerationRequest { seed: img.seed, batch: 1, ..request.clone() };
        let texts =
            crate::export::generation_texts(&request, &job.saved_prompt, img.seed, &provenance, &img.timings);
        let path = save_new(&job.output_dir, img.seed, &img.image, &texts)?;
        let item = HistoryItem {
            id: index,
            path,
            request,
            saved_prompt: job.saved_prompt.clone(),
            model: provenance.model.clone(),
            created_unix: now_unix(),
            timings: img.timings,
        };
        index += 1;
        outbox.send(Event::ImageSaved { id: job.id, item: Box::new(item), image: img.image });
        Ok(())
    };
    crate::engine::generate_each(
        &loaded.model,
        &request,
        &inputs,
        &mut on_progress,
        &mut on_image,
        &job.cancel,
    )
}

/// Readies the loaded model for `request` (its autoencoder) and the request's ControlNet units
/// (models found, maps made from their pictures, or from `canvas` for units without one); returns
/// the request with its ControlNets' paths resolved, and the units.
pub(crate) fn prepare(
    loaded: &mut super::loading::Loaded,
    request: &crate::engine::GenerationRequest,
    canvas: Option<&RgbImage>,
    mask: Option<&image::GrayImage>,
) -> Result<(crate::engine::GenerationRequest, Vec<crate::engine::controlnet::ControlInput>)> {
    loaded.model.use_vae(request.vae.as_deref())?;
    let mut request = request.clone();
    let dir = std::path::Path::new(crate::engine::controlnet::prepare::DEFAULT_DIR);
    crate::job::resolve_controlnets(&mut request, dir)?;
    let controls = crate::engine::controlnet::prepare(
        &loaded.model,
        &request,
        canvas,
        mask,
        dir,
        &mut loaded.controlnets,
    )?;
    Ok((request, controls))
}

/// Saves a picture under a fresh name (`<unix time>-<seed>[-n].png`), never over another.
fn save_new(dir: &Path, seed: u64, image: &RgbImage, texts: &[(String, String)]) -> Result<PathBuf> {
    let stem = format!("{}-{seed}", now_unix());
    for n in 0..1000 {
        let name = if n == 0 { format!("{stem}.png") } else { format!("{stem}-{n}.png") };
        let path = dir.join(name);
        match save_png(&path, image, texts, false) {
            Ok(()) => return Ok(path),
            Err(Error::WouldOverwrite { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::BadRequest(format!("{} has too many pictures named {stem}-*.png", dir.display())))
}
