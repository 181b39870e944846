//! LoRA and LyCORIS style adapters: read from every common file layout into one form, stacked with
//! separate UNet and text-encoder weights, and merged into the model's weights.
//!
//! Merging always starts from the pristine weights the model was loaded with, so changing a
//! weight, adding, removing or reordering adapters never reloads anything from disk and never
//! accumulates drift. A merged stack costs nothing per denoising step.

mod adapter;
pub mod delta;
mod metadata;
mod names;
pub mod tags;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};

pub use adapter::{Adapter, AdapterModule, ModuleName, Target};
pub use metadata::{AdapterMetadata, TrainedFor};
use names::ModuleIndex;

use super::family::{Family, SdxlLine};
use super::model::StableDiffusion;
use super::weights::TensorMap;
use crate::error::{Error, Result};

/// One adapter in a stack, with its weights.
#[derive(Clone, Debug)]
pub struct StackEntry {
    /// The adapter.
    pub adapter: Arc<Adapter>,
    /// Weight of its UNet modules (negative values invert the style).
    pub unet_weight: f64,
    /// Weight of its text-encoder modules.
    pub text_weight: f64,
    /// Disabled entries stay in the stack but change nothing.
    pub enabled: bool,
}

impl StackEntry {
    /// An enabled entry with one weight for both networks.
    pub fn new(adapter: Arc<Adapter>, weight: f64) -> Self {
        Self { adapter, unet_weight: weight, text_weight: weight, enabled: true }
    }
}

/// What became of one adapter against one model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterReport {
    /// The adapter's name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// UNet modules matched.
    pub unet_modules: usize,
    /// Text-encoder modules matched.
    pub text_modules: usize,
    /// Modules and keys that matched nothing in this model.
    pub unmatched: Vec<String>,
    /// The family the adapter says it was trained for.
    pub trained_for: Option<String>,
    /// Its trigger words.
    pub trigger_words: Vec<String>,
    /// Why it may not look right on this model though it fits (another line of SDXL fine-tunes).
    pub warning: Option<String>,
}

impl AdapterReport {
    /// One line for a terminal or a status bar.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} modules applied ({} UNet, {} text encoder)",
            self.name,
            self.unet_modules + self.text_modules,
            self.unet_modules,
            self.text_modules
        );
        if let Some(warning) = &self.warning {
            s.push_str(&format!("; {warning}"));
        }
        if !self.unmatched.is_empty() {
            let shown: Vec<&str> = self.unmatched.iter().take(3).map(String::as_str).collect();
            let more = if self.unmatched.len() > 3 { ", …" } else { "" };
            s.push_str(&format!("; {} not matched: {}{more}", self.unmatched.len(), shown.join(", ")));
        }
        s
    }
}

/// Checks that `adapter` was made for `model`'s family and counts what it matches.
pub fn check(adapter: &Adapter, model: &StableDiffusion) -> Result<AdapterReport> {
    let indexes = Indexes::of(&MergeBase::of(model));
    check_with(adapter, model.family, &indexes)
}

/// The module lookups of one model: UNet, text encoder, and SDXL's second text encoder.
struct Indexes {
    unet: ModuleIndex,
    text: ModuleIndex,
    text_2: Option<ModuleIndex>,
    /// Width of the text embeddings the UNet's cross-attention reads.
    context_width: usize,
    /// The model's line of SDXL fine-tunes.
    line: Option<SdxlLine>,
}

impl Indexes {
    fn of(base: &MergeBase) -> Self {
        Self {
            unet: ModuleIndex::unet(base.unet),
            text: ModuleIndex::text(base.text),
            text_2: base.text_2.map(ModuleIndex::text),
            context_width: base.context_width,
            line: base.line,
        }
    }
}

/// A warning when an SDXL adapter was trained on another line of fine-tunes than the model's
/// (a Pony LoRA on Illustrious loads, but its style rarely carries over).
fn line_warning(adapter: &Adapter, model: Option<SdxlLine>) -> Option<String> {
    let trained_on = adapter.metadata.trained_on.as_deref()?;
    let (made_for, model) = (SdxlLine::from_names([trained_on])?, model?);
    (made_for != model).then(|| {
        format!(
            "trained on {trained_on} ({}), but the model is {}: it loads, but may not look as intended",
            made_for.label(),
            model.label()
        )
    })
}

/// The family a cross-attention width belongs to.
fn family_of_width(width: usize) -> Option<&'static str> {
    match width {
        768 => Some("SD 1.x"),
        1024 => Some("SD 2.x"),
        2048 => Some("SDXL"),
        _ => None,
    }
}

/// "an SDXL", "an SD 1.x", "a Pony…": family names read with their article.
fn with_article(name: &str) -> String {
    let vowel_sound = name.starts_with(['S', 'A', 'E', 'I', 'O', 'U', 'a', 'e', 'i', 'o', 'u']);
    format!("{} {name}", if vowel_sound { "an" } else { "a" })
}

/// The width of text embeddings an adapter's cross-attention keys read, when it has such a key.
fn adapter_context_width(adapter: &Adapter) -> Option<usize> {
    adapter.modules.iter().find_map(|m| {
        let name = match &m.name {
            ModuleName::Flat(s) | ModuleName::Dotted(s) => s,
        };
        let reads_text =
            ["attn2_to_k", "attn2.to_k", "attn2_to_v", "attn2.to_v"].iter().any(|s| name.ends_with(s));
        match (&m.delta, reads_text && m.target == Target::Unet) {
            (delta::Delta::LoRa { down, .. }, true) => down.dim(1).ok(),
            _ => None,
        }
    })
}

fn check_with(adapter: &Adapter, family: Family, indexes: &Indexes) -> Result<AdapterReport> {
    let trained_for = adapter.metadata.trained_for.clone();
    let fits = matches!(
        (&trained_for, family),
        (None | Some(TrainedFor::Other(_)), _)
            | (Some(TrainedFor::Sd1), Family::Sd1)
            | (Some(TrainedFor::Sd2), Family::Sd2)
            | (Some(TrainedFor::Sdxl), Family::Sdxl)
    );
    let wrong_family = |made_for: &str| {
        Error::bad_file(
            format!(
                "{} was made for {}, but the model is {}; a LoRA only works on the family it was \
                 trained for, so use it with {} model",
                adapter.name,
                with_article(made_for),
                family.label(),
                with_article(made_for),
            ),
            &adapter.path,
        )
    };
    let has_second = adapter.modules.iter().any(|m| m.target == Target::Text2);
    if has_second && indexes.text_2.is_none() {
        return Err(wrong_family("SDXL"));
    }
    if let (Some(width), None | Some(TrainedFor::Other(_))) = (adapter_context_width(adapter), &trained_for) {
        if width != indexes.context_width {
            return Err(match family_of_width(width) {
                Some(made_for) => wrong_family(made_for),
                None => Error::bad_file(
                    format!(
                        "{} was made for another model: its cross-attention reads {width}-wide text \
                         embeddings, this {} model's are {} wide; use it with the model it was trained for",
                        adapter.name,
                        family.label(),
                        indexes.context_width
                    ),
                    &adapter.path,
                ),
            });
        }
    }
    if !fits {
        let made_for = trained_for.as_ref().map(TrainedFor::label).unwrap_or_default();
        return Err(wrong_family(&made_for));
    }
    let mut report = AdapterReport {
        name: adapter.name.clone(),
        title: adapter.metadata.title.clone(),
        unet_modules: 0,
        text_modules: 0,
        unmatched: adapter.unknown_keys.clone(),
        trained_for: trained_for.as_ref().map(TrainedFor::label),
        trigger_words: adapter.metadata.trigger_words.clone(),
        warning: line_warning(adapter, indexes.line),
    };
    for m in &adapter.modules {
        let found = match m.target {
            Target::Unet => indexes.unet.resolve(&m.name).map(|_| &mut report.unet_modules),
            Target::Text => indexes.text.resolve(&m.name).map(|_| &mut report.text_modules),
            Target::Text2 => {
                indexes.text_2.as_ref().and_then(|i| i.resolve(&m.name)).map(|_| &mut report.text_modules)
            }
        };
        match found {
            Some(count) => *count += 1,
            None => report.unmatched.push(match &m.name {
                ModuleName::Flat(s) | ModuleName::Dotted(s) => s.clone(),
            }),
        }
    }
    Ok(report)
}

/// Merges `stack` into `model`, starting from its pristine weights, and reports per adapter.
/// An adapter for another family, or one whose shapes do not fit, is refused with a sentence.
pub fn apply(model: &mut StableDiffusion, stack: &[StackEntry]) -> Result<Vec<AdapterReport>> {
    let merged = merge(&MergeBase::of(model), stack)?;
    model.rebuild(&merged.unet, &merged.text, merged.text_2.as_ref())?;
    Ok(merged.reports)
}

/// A stack merged into a model's weights (unchanged tensors shared with the base).
pub struct Merged {
    /// UNet weights.
    pub unet: TensorMap,
    /// Text-encoder weights.
    pub text: TensorMap,
    /// SDXL's second text encoder's weights.
    pub text_2: Option<TensorMap>,
    /// One report per enabled adapter.
    pub reports: Vec<AdapterReport>,
}

/// The pristine weights a stack is merged into.
pub struct MergeBase<'a> {
    /// UNet weights by diffusers name.
    pub unet: &'a TensorMap,
    /// Text-encoder weights by transformers name.
    pub text: &'a TensorMap,
    /// SDXL's second text encoder's weights by transformers name.
    pub text_2: Option<&'a TensorMap>,
    /// Width of the text embeddings the UNet's cross-attention reads.
    pub context_width: usize,
    /// The model's line of SDXL fine-tunes, when it is SDXL.
    pub line: Option<SdxlLine>,
    /// The model family, checked against each adapter's.
    pub family: Family,
    /// The dtype merged weights are stored in.
    pub dtype: DType,
    /// Where merged weights live.
    pub device: &'a candle_core::Device,
}

impl<'a> MergeBase<'a> {
    /// The pristine weights of `model`.
    pub fn of(model: &'a StableDiffusion) -> Self {
        Self {
            unet: model.base_unet_weights(),
            text: model.base_text_weights(),
            text_2: model.base_text2_weights(),
            context_width: model.unet.config().cross_attention_dim,
            line: model.line,
            family: model.family,
            dtype: model.dtype,
            device: &model.device,
        }
    }
}

/// The model's weights with `stack` merged in (unchanged tensors are shared with the base), and
/// a report per enabled adapter.
pub fn merge(base: &MergeBase, stack: &[StackEntry]) -> Result<Merged> {
    let indexes = Indexes::of(base);
    let mut reports = Vec::new();
    let mut deltas: HashMap<(Target, String), Tensor> = HashMap::new();
    for entry in stack.iter().filter(|e| e.enabled) {
        let adapter = &entry.adapter;
        reports.push(check_with(adapter, base.family, &indexes)?);
        for m in &adapter.modules {
            let (index, weights, weight) = match (m.target, &indexes.text_2, base.text_2) {
                (Target::Unet, _, _) => (&indexes.unet, base.unet, entry.unet_weight),
                (Target::Text, _, _) => (&indexes.text, base.text, entry.text_weight),
                (Target::Text2, Some(index), Some(w)) => (index, w, entry.text_weight),
                (Target::Text2, _, _) => continue,
            };
            let Some(module) = index.resolve(&m.name) else { continue };
            if weight == 0.0 {
                continue;
            }
            let misfit = |e: Error| {
                Error::bad_file(
                    format!("{} does not fit this model at {module}: {e}", adapter.name),
                    &adapter.path,
                )
            };
            let key = format!("{module}.weight");
            let shape = weights.get(&key).map(|t| t.dims().to_vec()).unwrap_or_default();
            let dw = m.delta.weight_delta(&shape).map_err(misfit)?;
            accumulate(&mut deltas, (m.target, key), (dw.to_device(base.device)? * weight)?)?;
            if let Some(db) = m.delta.bias_delta()? {
                let db = (db.to_device(base.device)? * weight)?;
                accumulate(&mut deltas, (m.target, format!("{module}.bias")), db)?;
            }
        }
    }
    let unet = merged(base.unet, &deltas, Target::Unet, base.dtype)?;
    let text = merged(base.text, &deltas, Target::Text, base.dtype)?;
    let text_2 = match base.text_2 {
        Some(w) => Some(merged(w, &deltas, Target::Text2, base.dtype)?),
        None => None,
    };
    Ok(Merged { unet, text, text_2, reports })
}

fn accumulate(
    deltas: &mut HashMap<(Target, String), Tensor>,
    key: (Target, String),
    d: Tensor,
) -> Result<()> {
    let sum = match deltas.remove(&key) {
        Some(prev) => (prev + d)?,
        None => d,
    };
    deltas.insert(key, sum);
    Ok(())
}

/// The base weights with the summed changes added in f32, shared where nothing changed.
fn merged(
    base: &TensorMap,
    deltas: &HashMap<(Target, String), Tensor>,
    target: Target,
    dtype: DType,
) -> Result<TensorMap> {
    let mut out = base.clone();
    for ((t, key), d) in deltas {
        if *t != target {
            continue;
        }
        if let Some(w) = base.get(key) {
            let sum = (w.to_dtype(DType::F32)? + d.reshape(w.dims())?)?;
            out.insert(key.clone(), sum.to_dtype(dtype)?);
        }
    }
    Ok(out)
}
