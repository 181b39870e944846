//! The CLIP text encoder (transformers' `CLIPTextModel`), reading weights by transformers' names
//! without the `text_model.` prefix (the loader strips it when present).

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
    hidden: usize,
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
            hidden: cfg.hidden_size,
        })
    }

    /// Width of the embeddings this encoder produces.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Encodes `[batch, n]` token ids.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let tokens = self.token_embedding.index_select(&ids.flatten_all()?, 0)?;
        let tokens = tokens.reshape((b, n, self.hidden))?;
        let positions = self.position_embedding.narrow(0, 0, n)?;
        let mut x = tokens.broadcast_add(&positions)?;
        let mask = causal_mask(n, x.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask)?;
        }
        self.final_norm.forward(&x)
    }
}

fn causal_mask(n: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> =
        (0..n).flat_map(|i| (0..n).map(move |j| if j > i { f32::MIN } else { 0.0 })).collect();
    Ok(Tensor::from_vec(values, (n, n), device)?.to_dtype(DType::F32)?)
}
