//! Presets: named generation settings (sampler, steps, guidance, size, negative prompt) shipped in
//! `presets/` and compiled in, plus the user's own JSON files in `~/.config/easel/presets/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::SamplerKind;
use crate::error::{Error, Result};

/// Settings a preset fixes; fields left out keep the command's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    /// A display name.
    pub name: String,
    /// One sentence on when to use it.
    #[serde(default)]
    pub description: String,
    /// The sampler.
    pub sampler: Option<SamplerKind>,
    /// Denoising steps.
    pub steps: Option<usize>,
    /// Guidance scale.
    pub cfg_scale: Option<f64>,
    /// Width in pixels.
    pub width: Option<usize>,
    /// Height in pixels.
    pub height: Option<usize>,
    /// The negative prompt.
    pub negative_prompt: Option<String>,
}

/// The presets shipped with Easel, by file stem.
const SHIPPED: [(&str, &str); 4] = [
    ("quality-sd15", include_str!("../presets/quality-sd15.json")),
    ("draft-sd15", include_str!("../presets/draft-sd15.json")),
    ("fast-lcm", include_str!("../presets/fast-lcm.json")),
    ("interactive-turbo", include_str!("../presets/interactive-turbo.json")),
];

/// The user's preset folder.
pub fn user_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("easel").join("presets"))
}

/// A preset by file path, by the name of a user preset, or by the name of a shipped one.
pub fn load(spec: &str) -> Result<Preset> {
    let path = Path::new(spec);
    if path.is_file() {
        return parse_file(path);
    }
    if let Some(p) = user_dir().map(|d| d.join(format!("{spec}.json"))).filter(|p| p.is_file()) {
        return parse_file(&p);
    }
    match SHIPPED.iter().find(|(name, _)| *name == spec) {
        Some((name, text)) => serde_json::from_str(text)
            .map_err(|e| Error::BadRequest(format!("the shipped preset {name} is damaged ({e})"))),
        None => Err(Error::BadRequest(format!(
            "no preset {spec:?}: give a JSON file or one of {}",
            list().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn parse_file(path: &Path) -> Result<Preset> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read the preset", e, path))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(format!("this is not a valid preset ({e})"), path))
}

/// Every preset's name and description: shipped ones, then the user's.
pub fn list() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = SHIPPED
        .iter()
        .filter_map(|(name, text)| {
            serde_json::from_str::<Preset>(text).ok().map(|p| (name.to_string(), p.description))
        })
        .collect();
    if let Some(Ok(entries)) = user_dir().map(std::fs::read_dir) {
        let mut user: Vec<(String, String)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter_map(|p| {
                let preset = parse_file(&p).ok()?;
                Some((p.file_stem()?.to_string_lossy().to_string(), preset.description))
            })
            .collect();
        user.sort();
        out.extend(user);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_presets_parse_and_validate() {
        for (name, _) in SHIPPED {
            let p = load(name).expect("loads");
            assert!(p.sampler.is_some() && p.steps.is_some(), "{name}");
            assert!(!p.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let msg = load("no-such-preset").expect_err("refused").to_string();
        assert!(msg.contains("quality-sd15"), "{msg}");
    }
}
