//! The CLIP text encoder (transformers' `CLIPTextModel`, and `CLIPTextModelWithProjection` for
//! SDXL's second encoder), reading weights by transformers' names without the `text_model.`
//! prefix (the loader strips it when present).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::ClipConfig;
use super::ops::{self, LayerNorm, Linear};
use crate::error::{Error, Result};

struct EncoderLayer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: Activation,
}

#[derive(Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipConfig, act: Activation) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let attn = vb.pp("self_attn");
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("layer_norm1"), h, eps)?,
            q: Linear::new(attn.pp("q_proj"), h, h)?,
            k: Linear::new(attn.pp("k_proj"), h, h)?,
            v: Linear::new(attn.pp("v_proj"), h, h)?,
            out: Linear::new(attn.pp("out_proj"), h, h)?,
            norm2: LayerNorm::new(vb.pp("layer_norm2"), h, eps)?,
            fc1: Linear::new(vb.pp("mlp").pp("fc1"), h, cfg.intermediate_size)?,
            fc2: Linear::new(vb.pp("mlp").pp("fc2"), cfg.intermediate_size, h)?,
            heads: cfg.num_attention_heads,
            act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let d = c / self.heads;
        let h = self.norm1.forward(x)?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, n, self.heads, d))?.transpose(1, 2)?.reshape((b * self.heads, n, d))?)
        };
        let q = split(self.q.forward(&h)?)?;
        let k = split(self.k.forward(&h)?)?;
        let v = split(self.v.forward(&h)?)?;
        let a = ops::attention(&q, &k, &v, (d as f64).powf(-0.5), Some(mask))?;
        let a = a.reshape((b, self.heads, n, d))?.transpose(1, 2)?.reshape((b, n, c))?;
        let x = (x + self.out.forward(&a)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = match self.act {
            Activation::QuickGelu => ops::quick_gelu(&h)?,
            Activation::Gelu => ops::gelu(&h)?,
        };
        Ok((x + self.fc2.forward(&h)?)?)
    }
}

/// The text encoder: token ids `[batch, 77]` → last hidden state `[batch, 77, hidden]`.
pub struct ClipTextEncoder {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
    pooled_width: usize,
    hidden: usize,
}

/// What SDXL reads from one encoder: the penultimate layer's hidden states (no final norm) and,
/// from an encoder with a projection, the pooled vector.
pub struct PenultimateOutput {
    /// Hidden states after all but the last layer, `[batch, n, hidden]`.
    pub hidden: Tensor,
    /// The final-normed last layer at the end token, projected: `[batch, projection_dim]`.
    pub pooled: Option<Tensor>,
}

impl ClipTextEncoder {
    /// Builds the encoder from `cfg`, reading weights below `vb`.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let act = match cfg.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(Error::Unsupported(format!(
                    "the text encoder uses the activation {other:?}, which Easel does not know"
                )))
            }
        };
        let emb = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp("encoder.layers").pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: emb.get((cfg.vocab_size, cfg.hidden_size), "token_embedding.weight")?,
            position_embedding: emb
                .get((cfg.max_position_embeddings, cfg.hidden_size), "position_embedding.weight")?,
            layers,
            final_norm: LayerNorm::new(vb.pp("final_layer_norm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            // transformers writes `projection_dim` for every CLIP config; only the
            // `…WithProjection` models carry the layer.
            projection: match cfg.projection_dim {
                Some(p) if vb.contains_tensor("text_projection.weight") => {
                    Some(Linear::no_bias(vb.pp("text_projection"), cfg.hidden_size, p)?)
                }
                _ => None,
            },
            pooled_width: cfg.projection_dim.unwrap_or(cfg.hidden_size),
            hidden: cfg.hidden_size,
        })
    }

    /// Width of the embeddings this encoder produces.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Width of the pooled vector, when the encoder has a projection.
    pub fn projection_dim(&self) -> Option<usize> {
        self.projection.as_ref().map(|_| self.pooled_width)
    }

    /// Encodes `[batch, n]` token ids: the last layer's hidden states, final-normed.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.encode(ids, Layer::Normed(1), &[])?.hidden)
    }

    /// Encodes `[batch, n]` token ids as SDXL reads them (transformers' `hidden_states[-2]`, and
    /// `text_embeds` when the encoder has a projection).
    pub fn forward_penultimate(&self, ids: &Tensor) -> Result<PenultimateOutput> {
        self.encode(ids, Layer::Penultimate, &[])
    }

    /// Encodes `[1, n]` token ids with textual-inversion vectors put in place of the token
    /// embeddings at `fixes` (each: the slot after the start token where its rows begin, and the
    /// rows `[k, hidden]`; rows that would reach the last position are dropped, as A1111 does),
    /// reading the hidden states `layer` names. The pooled vector (encoders with a projection)
    /// always comes from the final-normed last layer.
    pub fn encode(&self, ids: &Tensor, layer: Layer, fixes: &[(usize, Tensor)]) -> Result<PenultimateOutput> {
        let (mut x, mask) = self.embed(ids, fixes)?;
        let total = self.layers.len();
        if total == 0 {
            return Err(Error::Internal("a text encoder without layers".into()));
        }
        // transformers' hidden_states[-k] is the output of the first `total + 1 - k` layers.
        let (run, normed) = match layer {
            Layer::Normed(skip) => (total + 1 - skip.clamp(1, total), true),
            Layer::Penultimate => (total - 1, false),
        };
        for layer in &self.layers[..run] {
            x = layer.forward(&x, &mask)?;
        }
        let pooled = match &self.projection {
            Some(projection) => {
                let mut top = x.clone();
                for layer in &self.layers[run..] {
                    top = layer.forward(&top, &mask)?;
                }
                let top = self.final_norm.forward(&top)?;
                let rows = end_positions(ids)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, at)| top.get(i)?.get(at)?.unsqueeze(0))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Some(projection.forward(&Tensor::cat(&rows, 0)?)?)
            }
            None => None,
        };
        let hidden = if normed { self.final_norm.forward(&x)? } else { x };
        Ok(PenultimateOutput { hidden, pooled })
    }

    /// Token and position embeddings of `ids` (with `fixes` in place), and the causal mask.
    fn embed(&self, ids: &Tensor, fixes: &[(usize, Tensor)]) -> Result<(Tensor, Tensor)> {
        let (b, n) = ids.dims2()?;
        let mut tokens = self.token_embedding.index_select(&ids.flatten_all()?, 0)?;
        if !fixes.is_empty() {
            if b != 1 {
                return Err(Error::Internal("embeddings are placed in one chunk at a time".into()));
            }
            for (offset, rows) in fixes {
                let start = offset + 1;
                let len = rows.dim(0)?.min(n.saturating_sub(start + 1));
                if len == 0 {
                    continue;
                }
                let rows = rows.narrow(0, 0, len)?.to_dtype(tokens.dtype())?.to_device(tokens.device())?;
                let mut parts = vec![tokens.narrow(0, 0, start)?, rows];
                if start + len < n {
                    parts.push(tokens.narrow(0, start + len, n - start - len)?);
                }
                tokens = Tensor::cat(&parts, 0)?;
            }
        }
        let tokens = tokens.reshape((b, n, self.hidden))?;
        let positions = self.position_embedding.narrow(0, 0, n)?;
        let x = tokens.broadcast_add(&positions)?;
        let mask = causal_mask(n, x.device())?;
        Ok((x, mask))
    }
}

/// Which hidden states of the text encoder are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// transformers' `hidden_states[-k]` through the final layer norm: `Normed(1)` is
    /// `last_hidden_state`, `Normed(2)` A1111's clip skip 2.
    Normed(usize),
    /// `hidden_states[-2]` without the final norm, what SDXL reads.
    Penultimate,
}

/// Where each row's end token is: transformers pools at the first position of the largest id
/// (`argmax`), which is the end token in CLIP's vocabulary whatever the padding.
fn end_positions(ids: &Tensor) -> Result<Vec<usize>> {
    let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|row| {
            let max = row.iter().copied().max().unwrap_or(0);
            row.iter().position(|&id| id == max).unwrap_or(0)
        })
        .collect())
}

fn causal_mask(n: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> =
        (0..n).flat_map(|i| (0..n).map(move |j| if j > i { f32::MIN } else { 0.0 })).collect();
    Ok(Tensor::from_vec(values, (n, n), device)?.to_dtype(DType::F32)?)
}
