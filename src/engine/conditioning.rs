//! What the UNet is conditioned on, made from the request's prompts: the text embeddings for
//! every family, and for SDXL also the pooled text vector and the micro-conditioning numbers.
//! Follows diffusers' `encode_prompt`: SD 1.x/2.x read the text encoder's output; SDXL reads
//! both encoders' penultimate layers side by side, pools the second at its end token, and turns
//! an empty negative prompt into zeros.

use candle_core::{DType, Device, Tensor};

use super::config::UNetConfig;
use super::model::StableDiffusion;
use super::request::{GenerationRequest, MicroConditioning};
use crate::error::Result;

/// The UNet's conditioning for one step's batch (negative first when guided, as diffusers).
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

    /// Pictures in the batch this conditions.
    pub fn batch(&self) -> Result<usize> {
        Ok(self.context.dim(0)?)
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
        let time_ids = time_ids(&MicroConditioning::default(), (width, height), 1, dtype, device)?;
        Ok(Self { context, pooled: Some(pooled), time_ids: Some(time_ids) })
    }
}

/// Encodes `request`'s prompts for `model`; `guided` adds the negative half first.
pub fn encode(model: &StableDiffusion, request: &GenerationRequest, guided: bool) -> Result<Conditioning> {
    // Adapter tags select LoRAs; like A1111, the text encoder never sees them.
    let prompt = super::lora::tags::strip_tags(&request.prompt);
    let negative = super::lora::tags::strip_tags(&request.negative_prompt);
    let zero_negative = model.zero_empty_negative && negative.trim().is_empty();
    let mut chunks = model.tokenizer.encode_chunks(&prompt, 1).len();
    if guided && !zero_negative {
        // A longer negative prompt: the prompt is padded with empty chunks to the same length.
        chunks = model.tokenizer.encode_chunks(&negative, chunks).len();
    }
    let cond = encode_text(model, &prompt, chunks)?;
    if !guided {
        return finish(model, request, cond, 1);
    }
    let uncond = if zero_negative {
        Encoded {
            context: cond.context.zeros_like()?,
            pooled: cond.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        }
    } else {
        encode_text(model, &negative, chunks)?
    };
    let context = Tensor::cat(&[&uncond.context, &cond.context], 0)?;
    let pooled = match (uncond.pooled, cond.pooled) {
        (Some(u), Some(c)) => Some(Tensor::cat(&[u, c], 0)?),
        _ => None,
    };
    finish(model, request, Encoded { context, pooled }, 2)
}

/// One prompt's text embeddings (and SDXL's pooled vector).
struct Encoded {
    context: Tensor,
    pooled: Option<Tensor>,
}

/// Adds the micro-conditioning where the UNet reads it.
fn finish(
    model: &StableDiffusion,
    request: &GenerationRequest,
    e: Encoded,
    batch: usize,
) -> Result<Conditioning> {
    let time_ids = match &e.pooled {
        Some(_) => {
            let size = (request.width, request.height);
            Some(time_ids(&request.micro, size, batch, model.dtype, &model.device)?)
        }
        None => None,
    };
    Ok(Conditioning { context: e.context, pooled: e.pooled, time_ids })
}

/// The six micro-conditioning numbers, one row per picture in the batch.
fn time_ids(
    micro: &MicroConditioning,
    (width, height): (usize, usize),
    batch: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let row = micro.time_ids(width, height);
    Ok(Tensor::new(&row, device)?.unsqueeze(0)?.repeat((batch, 1))?.to_dtype(dtype)?)
}

/// Encodes `text` in `chunks` chunks of 77 tokens, concatenated along the sequence. SDXL pools
/// the first chunk, as A1111 and ComfyUI do.
fn encode_text(model: &StableDiffusion, text: &str, chunks: usize) -> Result<Encoded> {
    let ids = |chunk: &[u32]| -> Result<Tensor> { Ok(Tensor::new(chunk, &model.device)?.unsqueeze(0)?) };
    let first = model.tokenizer.encode_chunks(text, chunks);
    let Some(second) = &model.second else {
        let parts =
            first.iter().map(|chunk| model.text_encoder.forward(&ids(chunk)?)).collect::<Result<Vec<_>>>()?;
        return Ok(Encoded { context: Tensor::cat(&parts, 1)?, pooled: None });
    };
    let other = second.tokenizer.encode_chunks(text, chunks);
    let mut parts = Vec::with_capacity(first.len());
    let mut pooled = None;
    for (a, b) in first.iter().zip(&other) {
        let h1 = model.text_encoder.forward_penultimate(&ids(a)?)?.hidden;
        let out = second.encoder.forward_penultimate(&ids(b)?)?;
        parts.push(Tensor::cat(&[&h1, &out.hidden], 2)?);
        if pooled.is_none() {
            pooled = out.pooled;
        }
    }
    Ok(Encoded { context: Tensor::cat(&parts, 1)?, pooled })
}
