//! The generation pipeline: prompt → text embeddings → seeded latents → sampler loop with
//! classifier-free guidance → VAE decode, for txt2img, img2img and inpainting (9-channel models,
//! or latent blending for plain ones). Follows diffusers' Stable Diffusion pipelines step by step
//! so that the same weights and starting noise give the same picture.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor};
use image::{GrayImage, RgbImage};

use super::conditioning::PromptConditioning;
use super::controlnet::{ControlInput, StepControl};
use super::model::StableDiffusion;
use super::request::GenerationRequest;
use super::rng::ImageRng;
use super::samplers::Sampler;
use crate::error::{Error, Result, Setting};

/// Images and tensors the request points at, already read and checked.
#[derive(Default)]
pub struct GenerationInputs {
    /// img2img/inpainting start image, already at the request's size.
    pub init_image: Option<RgbImage>,
    /// Inpainting mask at the request's size (white = repaint).
    pub mask: Option<GrayImage>,
    /// Starting noise `[1, C, H/8, W/8]` replacing the seeded noise.
    pub noise: Option<Tensor>,
    /// ControlNet units with their maps at the request's size, in the request's order.
    pub controls: Vec<ControlInput>,
}

/// Where a generation is, reported after every step.
pub struct Progress<'a> {
    /// Index of the picture in the batch.
    pub image: usize,
    /// Steps done for this picture.
    pub step: usize,
    /// Steps this picture takes.
    pub total: usize,
    /// The latents after this step.
    pub latents: &'a Tensor,
    /// The clean latents this step predicted, what previews show (when the sampler says).
    pub denoised: Option<&'a Tensor>,
}

/// Seconds spent in each stage of one picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Text encoding.
    pub text_secs: f64,
    /// The denoising loop.
    pub denoise_secs: f64,
    /// VAE decoding.
    pub decode_secs: f64,
}

/// One finished picture.
pub struct GeneratedImage {
    /// The pixels.
    pub image: RgbImage,
    /// The seed that made it.
    pub seed: u64,
    /// Where the time went.
    pub timings: Timings,
}

/// Runs `request` on `model` and returns every picture. See [`generate_each`].
pub fn generate(
    model: &StableDiffusion,
    request: &GenerationRequest,
    inputs: &GenerationInputs,
    on_progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Vec<GeneratedImage>> {
    let mut images = Vec::with_capacity(request.batch);
    generate_each(
        model,
        request,
        inputs,
        on_progress,
        &mut |img| {
            images.push(img);
            Ok(())
        },
        cancel,
    )?;
    Ok(images)
}

/// Runs `request` on `model`, handing each picture to `on_image` as soon as it is decoded, so a
/// long batch never loses finished work. `on_progress` is called after every step; `cancel` is
/// checked between steps and stops the run with `Error::Cancelled`.
pub fn generate_each(
    model: &StableDiffusion,
    request: &GenerationRequest,
    inputs: &GenerationInputs,
    on_progress: &mut dyn FnMut(Progress),
    on_image: &mut dyn FnMut(GeneratedImage) -> Result<()>,
    cancel: &AtomicBool,
) -> Result<()> {
    request.validate()?;
    if request.controls.len() != inputs.controls.len() {
        // Units are prepared (network loaded, map made) by the caller; running without them
        // would draw a picture its parameters misdescribe.
        return Err(Error::Internal(format!(
            "the request has {} ControlNet unit(s) but {} were prepared",
            request.controls.len(),
            inputs.controls.len()
        )));
    }
    let started = Instant::now();
    let context = super::conditioning::encode(model, request)?;
    let text_secs = started.elapsed().as_secs_f64();
    for index in 0..request.batch {
        let (mut img, _) = generate_one(model, request, inputs, &context, index, on_progress, cancel)?;
        img.timings.text_secs = if index == 0 { text_secs } else { 0.0 };
        on_image(img)?;
    }
    Ok(())
}

/// Picture `index` of `request`'s batch from text embeddings made already (live painting keeps
/// them between frames), and the seconds its start picture took to encode (part of the
/// denoising time).
pub fn generate_one(
    model: &StableDiffusion,
    request: &GenerationRequest,
    inputs: &GenerationInputs,
    context: &PromptConditioning,
    index: usize,
    on_progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<(GeneratedImage, f64)> {
    let seed = request.seed.wrapping_add(index as u64);
    let mut timings = Timings::default();
    let t0 = Instant::now();
    let (latents, encode_secs) = denoise(model, request, inputs, context, seed, index, on_progress, cancel)?;
    timings.denoise_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut image = decode_to_image(model, &latents)?;
    if let (true, Some(init), Some(mask)) = (request.keep_unmasked, &inputs.init_image, &inputs.mask) {
        keep_unmasked(&mut image, init, mask);
    }
    timings.decode_secs = t1.elapsed().as_secs_f64();
    Ok((GeneratedImage { image, seed, timings }, encode_secs))
}

/// Standard normal noise `[1, c, h, w]` from the image's own generator.
fn randn(rng: &mut ImageRng, shape: (usize, usize, usize, usize), model: &StableDiffusion) -> Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    Ok(Tensor::from_vec(rng.randn(n), shape, &model.device)?.to_dtype(model.dtype)?)
}

/// Pixels `[1, 3, h, w]` in [-1, 1], as diffusers' image processor prepares them.
fn image_to_tensor(image: &RgbImage, model: &StableDiffusion) -> Result<Tensor> {
    let (w, h) = image.dimensions();
    let data: Vec<f32> = image.as_raw().iter().map(|&v| v as f32 / 255.0 * 2.0 - 1.0).collect();
    let t = Tensor::from_vec(data, (h as usize, w as usize, 3), &model.device)?;
    Ok(t.permute((2, 0, 1))?.unsqueeze(0)?.to_dtype(model.dtype)?)
}

/// Encodes pixels and samples the latent distribution, scaled for the UNet; a tiny autoencoder's
/// latents are the UNet's own and draw no random numbers, as in diffusers.
fn encode_image(model: &StableDiffusion, pixels: &Tensor, rng: &mut ImageRng) -> Result<Tensor> {
    if let Some(tiny) = model.tiny_autoencoder() {
        return Ok(tiny.encoder()?.encode(pixels)?.to_dtype(model.dtype)?);
    }
    let dist = model.vae.encode(pixels)?;
    let shape = dist.mean.dims4()?;
    let eps = randn(rng, shape, model)?;
    let sample = (dist.mean + (dist.std * eps)?)?;
    Ok((sample * model.vae.scaling_factor())?)
}

/// The mask as a `[1, 1, h, w]` tensor of 0/1 at pixel size, thresholded at one half.
fn mask_tensor(mask: &GrayImage, model: &StableDiffusion) -> Result<Tensor> {
    let (w, h) = mask.dimensions();
    let data: Vec<f32> =
        mask.as_raw().iter().map(|&v| if v as f32 / 255.0 >= 0.5 { 1.0 } else { 0.0 }).collect();
    Ok(Tensor::from_vec(data, (1, 1, h as usize, w as usize), &model.device)?.to_dtype(model.dtype)?)
}

/// One picture's run: the model, the request and the text embeddings it is conditioned on.
struct Run<'a> {
    model: &'a StableDiffusion,
    request: &'a GenerationRequest,
    context: &'a PromptConditioning,
    /// The picture's place in the batch (only the first takes given starting noise).
    index: usize,
    /// Latent shape `[1, channels, height/8, width/8]`.
    shape: (usize, usize, usize, usize),
    /// ControlNet units.
    controls: &'a [ControlInput],
}

/// What the loop starts from, made before the first step in diffusers' order of random draws.
struct Start {
    /// The first schedule step run (later than 0 for img2img).
    first: usize,
    /// The latents at that step.
    latents: Tensor,
    /// The starting noise (inpainting with a plain model re-noises the known region with it).
    noise: Tensor,
    /// The encoded init image, when the run starts from one or inpaints.
    image_latents: Option<Tensor>,
    /// The inpainting mask at latent size.
    latent_mask: Option<Tensor>,
    /// The encoded masked picture a 9-channel inpainting UNet reads beside the latents.
    masked_latents: Option<Tensor>,
    /// Seconds spent encoding pictures.
    encode_secs: f64,
}

#[allow(clippy::too_many_arguments)]
fn denoise(
    model: &StableDiffusion,
    request: &GenerationRequest,
    inputs: &GenerationInputs,
    context: &PromptConditioning,
    seed: u64,
    index: usize,
    on_progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<(Tensor, f64)> {
    let mut config = model.scheduler_config.clone();
    if let Some(spacing) = request.spacing {
        config.insert("timestep_spacing".into(), spacing.id().into());
    }
    let mut sampler = request.sampler.build_as(&config, request.steps, request.sampler_impl)?;
    let shape = (1, model.latent_channels(), request.height / 8, request.width / 8);
    let run = Run { model, request, context, index, shape, controls: &inputs.controls };
    let mut rng = ImageRng::new(request.rng, seed);
    let start = prepare(&run, inputs, sampler.as_ref(), &mut rng)?;
    if request.ensd != 0 {
        // A1111's eta noise seed delta: the steps' noise comes from a generator of its own.
        rng = ImageRng::new(request.rng, seed.wrapping_add(request.ensd));
    }
    let encode_secs = start.encode_secs;
    Ok((step_loop(&run, sampler.as_mut(), start, &mut rng, on_progress, cancel)?, encode_secs))
}

/// The first step img2img runs: the tail of the schedule `strength` asks for.
fn first_step(sampler: &dyn Sampler, request: &GenerationRequest) -> Result<usize> {
    let first = sampler.img2img_start(request.strength);
    if first >= sampler.timesteps().len() {
        return Err(Error::setting(
            Setting::Strength,
            format!("{} with {} steps leaves no step to run; raise either", request.strength, request.steps),
        ));
    }
    Ok(first)
}

/// The given starting noise for the first picture (checked), or seeded noise.
fn starting_noise(run: &Run, inputs: &GenerationInputs, rng: &mut ImageRng) -> Result<Tensor> {
    let shape = run.shape;
    match &inputs.noise {
        Some(n) if run.index == 0 => {
            if n.dims4()? != shape {
                return Err(Error::setting(
                    Setting::Noise,
                    format!(
                        "has shape {:?} but this request needs {:?}",
                        n.dims(),
                        [shape.0, shape.1, shape.2, shape.3]
                    ),
                ));
            }
            if !all_finite(n)? {
                return Err(Error::setting(
                    Setting::Noise,
                    "holds NaN or infinite values; it must be finite",
                ));
            }
            Ok(n.to_device(&run.model.device)?.to_dtype(run.model.dtype)?)
        }
        _ => randn(rng, shape, run.model),
    }
}

/// The start latents, noise and inpainting inputs, drawing random numbers in diffusers' order:
/// image latents, then the starting noise, then the masked image.
fn prepare(run: &Run, inputs: &GenerationInputs, sampler: &dyn Sampler, rng: &mut ImageRng) -> Result<Start> {
    let model = run.model;
    let pixels = match &inputs.init_image {
        Some(img) => Some(image_to_tensor(img, model)?),
        None => None,
    };
    let mask = match &inputs.mask {
        Some(m) => Some(mask_tensor(m, model)?),
        None => None,
    };
    let nine_channel = model.is_inpainting();
    if nine_channel && mask.is_none() {
        return Err(Error::setting(
            Setting::Mask,
            "is missing: this is an inpainting model, which needs a start picture and a mask (white where it should paint)",
        ));
    }
    // img2img runs the tail of the schedule; a full-strength inpaint starts from pure noise.
    let from_image = pixels.is_some() && !(mask.is_some() && run.request.strength >= 1.0);
    let first = if from_image { first_step(sampler, run.request)? } else { 0 };
    let encoding = Instant::now();
    let image_latents = match (&pixels, nine_channel) {
        (Some(p), false) => Some(encode_image(model, p, rng)?),
        (Some(p), true) if from_image => Some(encode_image(model, p, rng)?),
        _ => None,
    };
    let mut encode_secs = encoding.elapsed().as_secs_f64();
    let noise = starting_noise(run, inputs, rng)?;
    let latents = match (&image_latents, from_image) {
        (Some(init), true) => sampler.add_noise(init, &noise, first)?,
        _ => (&noise * sampler.init_noise_sigma())?,
    };
    let latent_mask = match &mask {
        Some(m) => Some(m.upsample_nearest2d(run.shape.2, run.shape.3)?),
        None => None,
    };
    let masked_latents = match (&pixels, &mask, nine_channel) {
        (Some(p), Some(m), true) => {
            let keep = (m.ones_like()? - m)?;
            let encoding = Instant::now();
            let encoded = encode_image(model, &p.broadcast_mul(&keep)?, rng)?;
            encode_secs += encoding.elapsed().as_secs_f64();
            Some(encoded)
        }
        (Some(_), Some(_), false) => {
            // diffusers encodes the masked image for plain models too and discards it; draw the
            // same noise (without the encode) so later ancestral steps see the same stream. A
            // tiny autoencoder's encode draws nothing.
            if model.tiny_autoencoder().is_none() {
                randn(rng, run.shape, model)?;
            }
            None
        }
        _ => None,
    };
    Ok(Start { first, latents, noise, image_latents, latent_mask, masked_latents, encode_secs })
}

/// The denoising steps from `start`, with guidance, inpainting and a progress report each.
fn step_loop(
    run: &Run,
    sampler: &mut dyn Sampler,
    start: Start,
    rng: &mut ImageRng,
    on_progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Tensor> {
    let model = run.model;
    let nine_channel = model.is_inpainting();
    let timesteps: Vec<f64> = sampler.timesteps().to_vec();
    let total = timesteps.len();
    let steps = total - start.first;
    let mut latents = start.latents;
    for (k, i) in (start.first..total).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let mut input = sampler.scale_model_input(&latents, i)?;
        if let (Some(m), Some(ml)) = (&start.latent_mask, &start.masked_latents) {
            input = Tensor::cat(&[&input, m, ml], 1)?;
        }
        let control = StepControl::at(run.controls, k, steps, run.request.sampler_impl);
        let out =
            run.context.predict(&model.unet, &input, timesteps[i], k, run.request.cfg_scale, &control)?;
        let mut step_noise = || randn(rng, run.shape, model);
        latents = sampler.step(&out, i, &latents, &mut step_noise)?;
        // Plain models inpaint by putting the known region back at the next step's noise level.
        if let (Some(m), Some(init), false) = (&start.latent_mask, &start.image_latents, nine_channel) {
            let known =
                if i + 1 < total { sampler.add_noise(init, &start.noise, i + 1)? } else { init.clone() };
            let keep = (m.ones_like()? - m)?;
            latents = (known.broadcast_mul(&keep)? + latents.broadcast_mul(m)?)?;
        }
        if !all_finite(&latents)? {
            return Err(Error::Numerical(format!(
                "the picture became NaN at step {} of {steps}: the model, an adapter or the settings \
                 produce numbers out of range (try f32 precision, lower LoRA weights or a lower CFG); \
                 nothing was saved",
                k + 1
            )));
        }
        let denoised = sampler.denoised();
        on_progress(Progress { image: run.index, step: k + 1, total: steps, latents: &latents, denoised });
    }
    Ok(latents)
}

/// Decodes latents to 8-bit RGB exactly as diffusers post-processes: (x/2 + ½) clamped to [0, 1],
/// times 255, rounded.
pub fn decode_to_image(model: &StableDiffusion, latents: &Tensor) -> Result<RgbImage> {
    let pixels = match model.tiny_autoencoder() {
        Some(tiny) => tiny.decoder.decode(latents)?,
        None => model.vae.decode(latents)?,
    };
    if !all_finite(&pixels)? {
        // A clamp would turn NaN into black and save it as if it were a picture.
        return Err(Error::Numerical(
            "the VAE produced NaN while decoding (it overflows in half precision on some models); \
             try f32 precision; nothing was saved"
                .into(),
        ));
    }
    pixels_to_image(&pixels)
}

/// Puts `init`'s pixels back where `mask` keeps them: each channel becomes
/// `init·(1 − m) + picture·m` with `m` the mask's value over 255, so a soft mask edge blends.
/// Sizes that differ (never from Easel's own inputs) leave the picture as it is.
pub fn keep_unmasked(picture: &mut RgbImage, init: &RgbImage, mask: &GrayImage) {
    if picture.dimensions() != init.dimensions() || picture.dimensions() != mask.dimensions() {
        return;
    }
    for ((out, kept), m) in picture.pixels_mut().zip(init.pixels()).zip(mask.pixels()) {
        let m = f32::from(m.0[0]) / 255.0;
        for c in 0..3 {
            let v = f32::from(kept.0[c]) * (1.0 - m) + f32::from(out.0[c]) * m;
            out.0[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Whether every value of `t` is finite: `0·x` is 0 for those and NaN otherwise, so one sum
/// answers it (a few microseconds on latents, small beside a step).
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.to_dtype(DType::F32)?.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()? == 0.0)
}

/// The first picture of decoded pixels `[b, 3, h, w]` in [-1, 1], post-processed as diffusers does.
pub fn pixels_to_image(pixels: &Tensor) -> Result<RgbImage> {
    let pixels = pixels.narrow(0, 0, 1)?.to_dtype(DType::F32)?;
    let pixels = ((pixels / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let (_, _, h, w) = pixels.dims4()?;
    let data: Vec<u8> = pixels
        .squeeze(0)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::Internal("the decoded picture has an unexpected size".into()))
}
