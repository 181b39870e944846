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

use super::family::Family;
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
    let unet = ModuleIndex::unet(model.base_unet_weights());
    let text = ModuleIndex::text(model.base_text_weights());
    check_with(adapter, model.family, &unet, &text)
}

fn check_with(
    adapter: &Adapter,
    family: Family,
    unet: &ModuleIndex,
    text: &ModuleIndex,
) -> Result<AdapterReport> {
    let trained_for = adapter.metadata.trained_for.clone();
    let fits = matches!(
        (&trained_for, family),
        (None | Some(TrainedFor::Other(_)), _)
            | (Some(TrainedFor::Sd1), Family::Sd1)
            | (Some(TrainedFor::Sd2), Family::Sd2)
    );
    if !fits {
        let made_for = trained_for.as_ref().map(TrainedFor::label).unwrap_or_default();
        return Err(Error::bad_file(
            format!(
                "{} was trained for {made_for}, but the model is {}; use it with an {made_for} model",
                adapter.name,
                family.label()
            ),
            &adapter.path,
        ));
    }
    let mut report = AdapterReport {
        name: adapter.name.clone(),
        title: adapter.metadata.title.clone(),
        unet_modules: 0,
        text_modules: 0,
        unmatched: adapter.unknown_keys.clone(),
        trained_for: trained_for.as_ref().map(TrainedFor::label),
        trigger_words: adapter.metadata.trigger_words.clone(),
    };
    for m in &adapter.modules {
        let found = match m.target {
            Target::Unet => unet.resolve(&m.name).map(|_| &mut report.unet_modules),
            Target::Text => text.resolve(&m.name).map(|_| &mut report.text_modules),
            Target::Text2 => None,
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
    let base = MergeBase {
        unet: model.base_unet_weights(),
        text: model.base_text_weights(),
        family: model.family,
        dtype: model.dtype,
        device: &model.device,
    };
    let (unet, text, reports) = merge(&base, stack)?;
    model.rebuild(&unet, &text)?;
    Ok(reports)
}

/// The pristine weights a stack is merged into.
pub struct MergeBase<'a> {
    /// UNet weights by diffusers name.
    pub unet: &'a TensorMap,
    /// Text-encoder weights by transformers name.
    pub text: &'a TensorMap,
    /// The model family, checked against each adapter's.
    pub family: Family,
    /// The dtype merged weights are stored in.
    pub dtype: DType,
    /// Where merged weights live.
    pub device: &'a candle_core::Device,
}

/// The UNet and text-encoder weights with `stack` merged in (unchanged tensors are shared with
/// the base), and a report per enabled adapter.
pub fn merge(base: &MergeBase, stack: &[StackEntry]) -> Result<(TensorMap, TensorMap, Vec<AdapterReport>)> {
    let unet_index = ModuleIndex::unet(base.unet);
    let text_index = ModuleIndex::text(base.text);
    let mut reports = Vec::new();
    let mut deltas: HashMap<(Target, String), Tensor> = HashMap::new();
    for entry in stack.iter().filter(|e| e.enabled) {
        let adapter = &entry.adapter;
        reports.push(check_with(adapter, base.family, &unet_index, &text_index)?);
        for m in &adapter.modules {
            let (index, weights, weight) = match m.target {
                Target::Unet => (&unet_index, base.unet, entry.unet_weight),
                Target::Text => (&text_index, base.text, entry.text_weight),
                Target::Text2 => continue,
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
    Ok((unet, text, reports))
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
