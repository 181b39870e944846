//! What an adapter says about itself: kohya's `ss_*` header keys and ModelSpec's `modelspec.*`,
//! falling back to tensor shapes for the base family.

use std::collections::{BTreeMap, HashMap};

use super::adapter::{AdapterModule, ModuleName, Target};
use super::delta::Delta;

/// The base-model generation an adapter was trained for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TrainedFor {
    /// SD 1.x.
    Sd1,
    /// SD 2.x.
    Sd2,
    /// SDXL.
    Sdxl,
    /// Named in the file but not one Easel knows.
    Other(String),
}

impl TrainedFor {
    /// A short name for messages.
    pub fn label(&self) -> String {
        match self {
            TrainedFor::Sd1 => "SD 1.x".into(),
            TrainedFor::Sd2 => "SD 2.x".into(),
            TrainedFor::Sdxl => "SDXL".into(),
            TrainedFor::Other(s) => s.clone(),
        }
    }
}

/// An adapter's descriptive metadata.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AdapterMetadata {
    /// A human title (ModelSpec title, kohya output name, or the file name).
    pub title: String,
    /// Words that trigger the style, most useful first.
    pub trigger_words: Vec<String>,
    /// The rank (network dim).
    pub rank: Option<usize>,
    /// The α the adapter was trained with.
    pub alpha: Option<f64>,
    /// The base family it was trained for, if the file or its shapes say.
    pub trained_for: Option<TrainedFor>,
    /// A preview picture as a data URL, when the file carries one.
    pub thumbnail: Option<String>,
    /// Every header key, for inspection.
    pub header: BTreeMap<String, String>,
    /// The checkpoint it was trained on, as kohya records it (`ss_sd_model_name`).
    pub trained_on: Option<String>,
}

impl AdapterMetadata {
    /// Reads the metadata from the header, using `modules` for what the header lacks.
    pub fn read(header: &HashMap<String, String>, modules: &[AdapterModule], file_name: &str) -> Self {
        let get = |k: &str| header.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let title =
            get("modelspec.title").or_else(|| get("ss_output_name")).unwrap_or_else(|| file_name.to_string());
        let trigger_words = match get("modelspec.trigger_phrase") {
            Some(p) => p.split(',').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect(),
            None => top_tags(get("ss_tag_frequency").as_deref(), 5),
        };
        let rank = get("ss_network_dim").and_then(|v| v.parse().ok()).or_else(|| {
            modules.iter().find_map(|m| match &m.delta {
                Delta::LoRa { down, .. } => down.dim(0).ok(),
                _ => None,
            })
        });
        let alpha = get("ss_network_alpha").and_then(|v| v.parse().ok());
        let trained_for = get("ss_base_model_version")
            .map(|v| family_from_name(&v))
            .or_else(|| get("modelspec.architecture").map(|v| family_from_name(&v)))
            .or_else(|| family_from_shapes(modules));
        Self {
            title,
            trigger_words,
            rank,
            alpha,
            trained_for,
            thumbnail: get("modelspec.thumbnail"),
            header: header.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            trained_on: get("ss_sd_model_name"),
        }
    }
}

fn family_from_name(v: &str) -> TrainedFor {
    let v = v.to_ascii_lowercase();
    if v.contains("xl") {
        TrainedFor::Sdxl
    } else if v.starts_with("sd_v1") || v.contains("stable-diffusion-v1") || v.starts_with("sd1") {
        TrainedFor::Sd1
    } else if v.starts_with("sd_v2") || v.contains("stable-diffusion-v2") || v.starts_with("sd2") {
        TrainedFor::Sd2
    } else {
        TrainedFor::Other(v)
    }
}

/// Cross-attention keys read the text embeddings: their input width names the family.
fn family_from_shapes(modules: &[AdapterModule]) -> Option<TrainedFor> {
    if modules.iter().any(|m| m.target == Target::Text2) {
        return Some(TrainedFor::Sdxl);
    }
    modules.iter().find_map(|m| {
        let name = match &m.name {
            ModuleName::Flat(s) | ModuleName::Dotted(s) => s,
        };
        if !(name.ends_with("attn2_to_k") || name.ends_with("attn2.to_k")) {
            return None;
        }
        let width = match &m.delta {
            Delta::LoRa { down, .. } => down.dim(1).ok()?,
            _ => return None,
        };
        match width {
            768 => Some(TrainedFor::Sd1),
            1024 => Some(TrainedFor::Sd2),
            2048 => Some(TrainedFor::Sdxl),
            _ => None,
        }
    })
}

/// The most frequent training tags, from kohya's `{dataset: {tag: count}}`.
fn top_tags(json: Option<&str>, n: usize) -> Vec<String> {
    let Some(value) = json.and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()) else {
        return Vec::new();
    };
    let mut counts: HashMap<String, i64> = HashMap::new();
    for dataset in value.as_object().into_iter().flat_map(|o| o.values()) {
        for (tag, count) in dataset.as_object().into_iter().flatten() {
            *counts.entry(tag.trim().to_string()).or_default() += count.as_i64().unwrap_or(0);
        }
    }
    let mut tags: Vec<(String, i64)> = counts.into_iter().filter(|(t, _)| !t.is_empty()).collect();
    tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    tags.into_iter().take(n).map(|(t, _)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_words_fall_back_to_frequent_tags() {
        let json = r#"{"10_a": {"ink": 5, "sketch": 2}, "5_b": {"sketch": 9, " ": 50}}"#;
        assert_eq!(top_tags(Some(json), 5), vec!["sketch", "ink"]);
    }

    #[test]
    fn family_names_are_read() {
        assert_eq!(family_from_name("sd_v1"), TrainedFor::Sd1);
        assert_eq!(family_from_name("sd_v2_768_v"), TrainedFor::Sd2);
        assert_eq!(family_from_name("sdxl_base_v1-0"), TrainedFor::Sdxl);
        assert_eq!(family_from_name("stable-diffusion-xl-v1-base/lora"), TrainedFor::Sdxl);
        assert_eq!(family_from_name("stable-diffusion-v1/lora"), TrainedFor::Sd1);
    }
}
