//! What the UNet is conditioned on, made from the request's prompts as A1111 reads them: the
//! prompt split at `AND` into weighted parts, each part's prompt-editing schedule, each text in
//! 77-token chunks with emphasis weights and embeddings, encoded and weighted per token; for SDXL
//! also the pooled text vector (from the first chunk, unweighted) and the micro-conditioning.
//! SD 1.x/2.x read their text encoder's output (SD 1.x at the clip-skip layer); SDXL reads both
//! encoders' penultimate layers side by side and turns an empty negative prompt into zeros.
//! With plain prompts this is exactly diffusers' `encode_prompt`.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::clip::{ClipTextEncoder, Layer};
use super::config::UNetConfig;
use super::controlnet::StepControl;
use super::embeddings::{Embedding, EmbeddingDb};
use super::family::Family;
use super::model::StableDiffusion;
use super::prompt::chunks::{chunks, Chunk};
use super::prompt::{composable_parts, schedule::schedule, Emphasis};
use super::request::{GenerationRequest, MicroConditioning};
use crate::error::{Error, Result};

/// The UNet's conditioning for one forward pass (a batch of rows).
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// Text embeddings `[b, 77·chunks, cross_attention_dim]`.
    pub context: Tensor,
    /// SDXL: the pooled text vector `[b, pooled]`.
    pub pooled: Option<Tensor>,
    /// SDXL: the six micro-conditioning numbers `[b, 6]`.
    pub time_ids: Option<Tensor>,
}

impl Conditioning {
    /// Text embeddings alone, what SD 1.x/2.x read.
    pub fn text(context: Tensor) -> Self {
        Self { context, pooled: None, time_ids: None }
    }

    /// Stand-in conditioning of the right shapes for timing a UNet built from `cfg`: normal
    /// random text embeddings of `tokens` positions, and for SDXL a zero pooled vector and the
    /// time ids of a `width`×`height` picture.
    pub fn stand_in(
        cfg: &UNetConfig,
        tokens: usize,
        (width, height): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let context =
            Tensor::randn(0f32, 1.0, (1, tokens, cfg.cross_attention_dim), device)?.to_dtype(dtype)?;
        let (Some(time), Some(input)) =
            (cfg.addition_time_embed_dim, cfg.projection_class_embeddings_input_dim)
        else {
            return Ok(Self::text(context));
        };
        let pooled = Tensor::zeros((1, input.saturating_sub(6 * time)), dtype, device)?;
        let time_ids = time_ids(&MicroConditioning::default(), (width, height), dtype, device)?;
        Ok(Self { context, pooled: Some(pooled), time_ids: Some(time_ids) })
    }
}

/// One text encoded: `[1, 77·chunks, width]` and, for SDXL, the pooled vector `[1, pooled]`.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The text embeddings.
    pub context: Tensor,
    /// SDXL's pooled vector.
    pub pooled: Option<Tensor>,
}

/// One prompt over the sampling steps: each text with the last step it conditions.
#[derive(Clone, Debug)]
pub struct Scheduled {
    entries: Vec<(usize, Encoded)>,
}

impl Scheduled {
    /// The text for UNet call `k` (0-based), as A1111's `reconstruct_cond_batch` picks it: the
    /// first entry whose end step is at least `k`.
    pub fn at(&self, k: usize) -> &Encoded {
        let index = self.entries.iter().position(|(end, _)| k <= *end).unwrap_or(0);
        &self.entries[index].1
    }
}

/// Everything a run is conditioned on.
#[derive(Clone, Debug)]
pub struct PromptConditioning {
    /// The negative prompt, when guidance runs.
    pub uncond: Option<Scheduled>,
    /// The prompt's `AND` parts and their weights (one part, weight 1, for most prompts).
    pub conds: Vec<(Scheduled, f64)>,
    /// SDXL's micro-conditioning row `[1, 6]`.
    pub time_ids: Option<Tensor>,
}

impl PromptConditioning {
    /// The guided model output for UNet call `k` on `input` at timestep `t`: one pass over every
    /// text (batched when their lengths agree, separately otherwise, as A1111 does), combined as
    /// `uncond + Σ (cond_i − uncond)·w_i·cfg`.
    pub fn predict(
        &self,
        unet: &super::unet::UNet,
        input: &Tensor,
        t: f64,
        k: usize,
        cfg_scale: f64,
        control: &StepControl,
    ) -> Result<Tensor> {
        let conds = padded_to_longest(self.conds.iter().map(|(c, _)| c.at(k)).collect())?;
        let mut texts: Vec<&Encoded> = Vec::with_capacity(conds.len() + 1);
        if let Some(u) = &self.uncond {
            texts.push(u.at(k));
        }
        texts.extend(conds.iter().map(|c| c.as_ref()));
        let outputs = self.run(unet, input, t, &texts, control)?;
        let Some(uncond) = self.uncond.as_ref().map(|_| &outputs[0]) else {
            return Ok(outputs[0].clone());
        };
        let mut out = uncond.clone();
        for ((_, weight), cond) in self.conds.iter().zip(&outputs[1..]) {
            out = (out + ((cond - uncond)? * (weight * cfg_scale))?)?;
        }
        Ok(out)
    }

    /// The UNet's output for each text.
    fn run(
        &self,
        unet: &super::unet::UNet,
        input: &Tensor,
        t: f64,
        texts: &[&Encoded],
        control: &StepControl,
    ) -> Result<Vec<Tensor>> {
        let len = texts[0].context.dim(1)?;
        let same = texts.iter().all(|e| e.context.dim(1).ok() == Some(len));
        let groups: Vec<Vec<&Encoded>> =
            if same { vec![texts.to_vec()] } else { texts.iter().map(|e| vec![*e]).collect() };
        let mut outputs = Vec::with_capacity(texts.len());
        for (g, group) in groups.into_iter().enumerate() {
            let n = group.len();
            // Only the first group can start with the negative prompt's row.
            let first_is_negative = g == 0 && self.uncond.is_some();
            let context = Tensor::cat(&group.iter().map(|e| &e.context).collect::<Vec<_>>(), 0)?;
            let pooled = match group.iter().map(|e| e.pooled.as_ref()).collect::<Option<Vec<_>>>() {
                Some(p) => Some(Tensor::cat(&p, 0)?),
                None => None,
            };
            let time_ids = match &self.time_ids {
                Some(row) => Some(row.repeat((n, 1))?),
                None => None,
            };
            let x = if n == 1 { input.clone() } else { input.repeat((n, 1, 1, 1))? };
            let cond = Conditioning { context, pooled, time_ids };
            let residuals = control.residuals(&x, t, &cond, first_is_negative)?;
            let out = unet.forward_controlled(&x, t, &cond, residuals.as_ref())?;
            for i in 0..n {
                outputs.push(out.narrow(0, i, 1)?);
            }
        }
        Ok(outputs)
    }
}

/// The `AND` parts of a prompt at one step, the shorter ones lengthened by repeating their last
/// token's vector, as A1111's `stack_conds` does so that the parts go through the UNet together.
fn padded_to_longest(parts: Vec<&Encoded>) -> Result<Vec<std::borrow::Cow<'_, Encoded>>> {
    use std::borrow::Cow;
    let longest = parts.iter().map(|e| e.context.dim(1)).collect::<candle_core::Result<Vec<_>>>()?;
    let longest = longest.into_iter().max().unwrap_or(0);
    parts
        .into_iter()
        .map(|e| {
            let n = e.context.dim(1)?;
            if n == longest {
                return Ok(Cow::Borrowed(e));
            }
            let last = e.context.narrow(1, n - 1, 1)?.repeat((1, longest - n, 1))?;
            let context = Tensor::cat(&[&e.context, &last], 1)?;
            Ok(Cow::Owned(Encoded { context, pooled: e.pooled.clone() }))
        })
        .collect()
}

/// The embeddings folder of `request`, read for `model`'s tokenizer (none without a folder).
pub fn embeddings_for(model: &StableDiffusion, request: &GenerationRequest) -> EmbeddingDb {
    match &request.embeddings_dir {
        Some(dir) => EmbeddingDb::load(dir, &model.tokenizer),
        None => EmbeddingDb::empty(),
    }
}

/// The texts of one prompt over `steps` steps, each in chunks.
fn chunked(
    model: &StableDiffusion,
    text: &str,
    request: &GenerationRequest,
    db: &EmbeddingDb,
) -> Vec<(usize, String, Vec<Chunk>)> {
    schedule(text, request.steps)
        .into_iter()
        .map(|(end, text)| {
            let segments = request.emphasis.parse(&text);
            let (chunks, _) = chunks(&segments, &model.tokenizer, db);
            (end, text, chunks)
        })
        .collect()
}

/// The prompt parts of `request` (LoRA tags removed, as A1111 does before anything else).
fn prompt_parts(request: &GenerationRequest) -> Vec<(String, f64)> {
    composable_parts(&super::lora::tags::strip_tags(&request.prompt))
}

/// The embeddings `request`'s prompts use, in order of first use, each checked against `model`.
pub fn used_embeddings(model: &StableDiffusion, request: &GenerationRequest) -> Result<Vec<Arc<Embedding>>> {
    used_in(model, request, &embeddings_for(model, request))
}

/// [`used_embeddings`] from an embeddings folder already read.
fn used_in(
    model: &StableDiffusion,
    request: &GenerationRequest,
    db: &EmbeddingDb,
) -> Result<Vec<Arc<Embedding>>> {
    let negative = super::lora::tags::strip_tags(&request.negative_prompt);
    let texts: Vec<String> =
        prompt_parts(request).into_iter().map(|(t, _)| t).chain(std::iter::once(negative)).collect();
    for text in &texts {
        if let Some(why) = db.unreadable_in(text, &model.tokenizer) {
            return Err(Error::BadRequest(format!(
                "the prompt names an embedding that cannot be read: {why}"
            )));
        }
    }
    let mut used: Vec<Arc<Embedding>> = Vec::new();
    if db.all().is_empty() {
        return Ok(used);
    }
    for text in texts {
        for (_, _, chunks) in chunked(model, &text, request, db) {
            for (_, e) in chunks.iter().flat_map(|c| &c.fixes) {
                if !used.iter().any(|u| u.name == e.name) {
                    check_embedding(model, e)?;
                    used.push(e.clone());
                }
            }
        }
    }
    Ok(used)
}

/// Refuses an embedding made for another family, naming it.
fn check_embedding(model: &StableDiffusion, e: &Embedding) -> Result<()> {
    let fits = match (&model.second, &e.clip_g) {
        (None, None) => e.width() == model.text_encoder.hidden_size(),
        (Some(second), Some(g)) => {
            e.width() == model.text_encoder.hidden_size() && g.dim(1)? == second.encoder.hidden_size()
        }
        _ => false,
    };
    if fits {
        return Ok(());
    }
    Err(Error::BadRequest(format!(
        "the embedding {} ({}) was made for {}, but the model is {}; remove it from the prompt or pick a model of its kind",
        e.name,
        e.path.display(),
        e.made_for(),
        model.family.label()
    )))
}

/// Encodes `request`'s prompts for `model`.
pub fn encode(model: &StableDiffusion, request: &GenerationRequest) -> Result<PromptConditioning> {
    let db = embeddings_for(model, request);
    used_in(model, request, &db)?;
    let parts = prompt_parts(request);
    let mut conds = Vec::with_capacity(parts.len());
    for (text, weight) in &parts {
        conds.push((encode_prompt(model, request, text, &db, false)?, *weight));
    }
    let plain = conds.len() == 1 && conds[0].1 == 1.0;
    let uncond = if request.cfg_scale > 1.0 || !plain {
        let negative = super::lora::tags::strip_tags(&request.negative_prompt);
        Some(encode_prompt(model, request, &negative, &db, true)?)
    } else {
        None
    };
    let time_ids = match model.second {
        Some(_) => {
            Some(time_ids(&request.micro, (request.width, request.height), model.dtype, &model.device)?)
        }
        None => None,
    };
    Ok(PromptConditioning { uncond, conds, time_ids })
}

/// One prompt's schedule, encoded. Like A1111, every text of the schedule is encoded in one batch
/// per chunk (shorter ones padded with empty chunks), and emphasis restores the batch's mean.
fn encode_prompt(
    model: &StableDiffusion,
    request: &GenerationRequest,
    text: &str,
    db: &EmbeddingDb,
    negative: bool,
) -> Result<Scheduled> {
    let texts = chunked(model, text, request, db);
    let zero = negative && model.zero_empty_negative && texts.iter().all(|(_, t, _)| t.trim().is_empty());
    let count = texts.iter().map(|(_, _, c)| c.len()).max().unwrap_or(1);
    let empty = Chunk::empty();
    let mut per_text: Vec<(Vec<Tensor>, Option<Tensor>)> = vec![(Vec::new(), None); texts.len()];
    for i in 0..count {
        let batch: Vec<&Chunk> = texts.iter().map(|(_, _, c)| c.get(i).unwrap_or(&empty)).collect();
        let (first, pooled) =
            encode_batch(model, &model.text_encoder, &model.tokenizer, &batch, request, true)?;
        let mut rows = first;
        if let Some(second) = &model.second {
            let (other, pooled) =
                encode_batch(model, &second.encoder, &second.tokenizer, &batch, request, false)?;
            rows = rows
                .iter()
                .zip(&other)
                .map(|(a, b)| Tensor::cat(&[a, b], 2))
                .collect::<candle_core::Result<_>>()?;
            if i == 0 {
                for (slot, p) in per_text.iter_mut().zip(pooled) {
                    slot.1 = p;
                }
            }
        } else if i == 0 {
            for (slot, p) in per_text.iter_mut().zip(pooled) {
                slot.1 = p;
            }
        }
        for (slot, row) in per_text.iter_mut().zip(rows) {
            slot.0.push(row);
        }
    }
    let entries = texts
        .iter()
        .zip(per_text)
        .map(|((end, _, _), (parts, pooled))| {
            let context = Tensor::cat(&parts, 1)?;
            let encoded = if zero {
                Encoded {
                    context: context.zeros_like()?,
                    pooled: pooled.as_ref().map(Tensor::zeros_like).transpose()?,
                }
            } else {
                Encoded { context, pooled }
            };
            Ok((*end, encoded))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Scheduled { entries })
}

/// One encoder's output for chunk `i` of every text: a `[1, 77, width]` row each, weighted by
/// the chosen emphasis over the whole batch, and each row's pooled vector (encoders with a
/// projection).
fn encode_batch(
    model: &StableDiffusion,
    encoder: &ClipTextEncoder,
    tokenizer: &super::tokenizer::Tokenizer,
    batch: &[&Chunk],
    request: &GenerationRequest,
    first: bool,
) -> Result<(Vec<Tensor>, Vec<Option<Tensor>>)> {
    let layer = match model.family {
        Family::Sdxl => Layer::Penultimate,
        Family::Sd1 => Layer::Normed(request.clip_skip),
        // A1111 reads SD 2.x's OpenCLIP at its fixed layer whatever the clip skip.
        Family::Sd2 => Layer::Normed(1),
    };
    let mut rows: Vec<Tensor> = Vec::with_capacity(batch.len());
    let mut pooled: Vec<Option<Tensor>> = Vec::with_capacity(batch.len());
    for (i, chunk) in batch.iter().enumerate() {
        // Alternation repeats texts step after step; a chunk seen before is not encoded again.
        if let Some(j) = batch[..i].iter().position(|c| c.same_tokens(chunk)) {
            rows.push(rows[j].clone());
            pooled.push(pooled[j].clone());
            continue;
        }
        let ids = Tensor::new(chunk.padded(tokenizer.pad_id()).as_slice(), &model.device)?.unsqueeze(0)?;
        let fixes: Vec<(usize, Tensor)> = chunk
            .fixes
            .iter()
            .filter_map(|(at, e)| {
                let rows = if first { Some(&e.clip_l) } else { e.clip_g.as_ref() };
                rows.map(|r| (*at, r.clone()))
            })
            .collect();
        let out = encoder.encode(&ids, layer, &fixes)?;
        rows.push(out.hidden);
        pooled.push(out.pooled);
    }
    if batch.iter().any(|c| c.is_weighted()) {
        let empty = match request.emphasis {
            Emphasis::Comfy => {
                let ids = Tensor::new(Chunk::empty().padded(tokenizer.pad_id()).as_slice(), &model.device)?
                    .unsqueeze(0)?;
                Some(encoder.encode(&ids, layer, &[])?.hidden)
            }
            _ => None,
        };
        rows = emphasize(&rows, batch, request.emphasis, empty.as_ref())?;
    }
    Ok((rows, pooled))
}

/// Applies the per-token weights of `batch` to its encoded rows.
fn emphasize(
    rows: &[Tensor],
    batch: &[&Chunk],
    mode: Emphasis,
    empty: Option<&Tensor>,
) -> Result<Vec<Tensor>> {
    let dtype = rows[0].dtype();
    let z = Tensor::cat(rows, 0)?.to_dtype(DType::F32)?;
    let weights: Vec<f32> = batch.iter().flat_map(|c| c.weights.iter().copied()).collect();
    let (b, n, _) = z.dims3()?;
    let w = Tensor::from_vec(weights, (b, n, 1), z.device())?;
    let z = match mode {
        Emphasis::Original => {
            let before = z.mean_all()?.to_scalar::<f32>()?;
            let scaled = z.broadcast_mul(&w)?;
            let after = scaled.mean_all()?.to_scalar::<f32>()?;
            // A text encoder whose outputs average to zero makes this 0/0; A1111 then draws a
            // NaN picture, Easel keeps the weights unnormalised.
            let ratio = before / after;
            if ratio.is_finite() {
                (scaled * f64::from(ratio))?
            } else {
                scaled
            }
        }
        Emphasis::NoNorm => z.broadcast_mul(&w)?,
        Emphasis::Comfy => match empty {
            Some(e) => {
                let e = e.to_dtype(DType::F32)?;
                (z.broadcast_sub(&e)?.broadcast_mul(&w)?.broadcast_add(&e))?
            }
            None => z,
        },
        Emphasis::Ignore | Emphasis::None => z,
    };
    (0..b).map(|i| Ok(z.narrow(0, i, 1)?.to_dtype(dtype)?)).collect()
}

/// The six micro-conditioning numbers as one row `[1, 6]` (repeated per row of a UNet batch).
fn time_ids(
    micro: &MicroConditioning,
    (width, height): (usize, usize),
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let row = micro.time_ids(width, height);
    Ok(Tensor::new(&row, device)?.unsqueeze(0)?.to_dtype(dtype)?)
}
