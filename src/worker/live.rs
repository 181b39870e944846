//! Live frames on the worker: the canvas as it is now, rendered with the live preset, the tiny
//! autoencoder and the prompt's cached embeddings. The studio cancels a frame the moment its
//! canvas or settings go stale, so a frame waiting behind another is skipped at once and a running
//! one stops at its next step: the newest state always wins and nothing piles up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use super::loading::State;
use super::{Event, JobId, JobOutcome, Outbox};
use crate::engine::live::{FrameTimings, LiveFrame};
use crate::engine::{GenerationInputs, GenerationRequest};
use crate::error::{Error, Result};

/// One live frame to render.
pub struct LiveJob {
    /// The frame's id, echoed in its event.
    pub id: JobId,
    /// One img2img picture: the live preset's sampling, the tiny autoencoder as `vae`, the seed
    /// locked; ControlNet units without a picture read the canvas.
    pub request: GenerationRequest,
    /// The canvas at the request's size.
    pub canvas: RgbImage,
    /// Set when the canvas or a setting changed since: the frame is stale.
    pub cancel: Arc<AtomicBool>,
    /// When the studio asked for the frame.
    pub asked: Instant,
}

/// A finished frame, as the studio gets it.
pub struct FrameDone {
    /// The frame's id.
    pub id: JobId,
    /// The picture.
    pub image: RgbImage,
    /// Where the render's time went.
    pub timings: FrameTimings,
    /// Seconds from the studio's request to the picture's send, queueing included.
    pub latency_secs: f64,
}

pub(crate) fn run(state: &mut State, outbox: &Outbox, job: LiveJob) {
    let id = job.id;
    if job.cancel.load(Ordering::SeqCst) {
        outbox.send(Event::LiveStopped { id, outcome: JobOutcome::Cancelled });
        return;
    }
    match render(state, &job) {
        Ok(LiveFrame { image, timings }) => {
            let latency_secs = job.asked.elapsed().as_secs_f64();
            outbox.send(Event::LiveFrame(Box::new(FrameDone { id, image, timings, latency_secs })));
        }
        Err(Error::Cancelled) => outbox.send(Event::LiveStopped { id, outcome: JobOutcome::Cancelled }),
        Err(e) => outbox.send(Event::LiveStopped { id, outcome: JobOutcome::Failed(e.in_studio_words()) }),
    }
}

fn render(state: &mut State, job: &LiveJob) -> Result<LiveFrame> {
    // The stack is merged only when it differs from the one merged now.
    state.merge_stack(&job.request.loras)?;
    let loaded = state.loaded.as_mut().ok_or_else(|| Error::BadRequest("no model is loaded".into()))?;
    let (request, controls) = super::generate::prepare(loaded, &job.request, Some(&job.canvas), None)?;
    let inputs = GenerationInputs { init_image: Some(job.canvas.clone()), mask: None, noise: None, controls };
    crate::engine::live::render(&loaded.model, &request, &inputs, &mut loaded.live_texts, &job.cancel)
}
