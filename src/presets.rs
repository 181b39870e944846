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
    /// The timestep spacing the model's makers publish (few-step models: `trailing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing: Option<crate::engine::samplers::schedule::Spacing>,
    /// The prompt (user presets saved from the studio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A LoRA stack (user presets saved from the studio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<crate::engine::LoraSpec>,
}

/// The presets shipped with Easel, by file stem.
const SHIPPED: [(&str, &str); 10] = [
    ("quality-sd15", include_str!("../presets/quality-sd15.json")),
    ("draft-sd15", include_str!("../presets/draft-sd15.json")),
    ("fast-lcm", include_str!("../presets/fast-lcm.json")),
    ("interactive-turbo", include_str!("../presets/interactive-turbo.json")),
    ("quality-sdxl", include_str!("../presets/quality-sdxl.json")),
    ("sdxl-lightning", include_str!("../presets/sdxl-lightning.json")),
    ("sdxl-turbo", include_str!("../presets/sdxl-turbo.json")),
    ("hyper-sdxl", include_str!("../presets/hyper-sdxl.json")),
    ("dmd2-sdxl", include_str!("../presets/dmd2-sdxl.json")),
    ("lcm-sdxl", include_str!("../presets/lcm-sdxl.json")),
];

/// The user's preset folder.
pub fn user_dir() -> Option<PathBuf> {
    Some(crate::paths::Paths::from_system().presets())
}

/// Saves `preset` as `dir/<name>.json`, atomically; an existing preset of that name is replaced
/// only when `overwrite` is set.
pub fn save(dir: &Path, name: &str, preset: &Preset, overwrite: bool) -> Result<PathBuf> {
    let clean = name.trim();
    if clean.is_empty() || clean.contains(['/', '\\', ':']) || clean.starts_with('.') {
        return Err(Error::BadRequest(format!(
            "{name:?} cannot be a preset name: use letters, digits, spaces, - or _"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the presets folder", e, dir))?;
    let path = dir.join(format!("{clean}.json"));
    let json = serde_json::to_string_pretty(preset).map_err(|e| Error::Internal(e.to_string()))?;
    crate::files::write_atomically(&path, json.as_bytes(), overwrite)?;
    Ok(path)
}

/// The shipped presets' names, then the names of the presets in `dir`.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    let mut user: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .filter_map(|p| Some(p.file_stem()?.to_string_lossy().to_string()))
                .collect()
        })
        .unwrap_or_default();
    user.sort();
    out.extend(user);
    out
}

/// A preset by name: the user's in `dir` first, then a shipped one.
pub fn load_from(dir: &Path, name: &str) -> Result<Preset> {
    let path = dir.join(format!("{name}.json"));
    if path.is_file() {
        return parse_file(&path);
    }
    load(name)
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
            .map_err(|e| Error::Internal(format!("the shipped preset {name} is damaged ({e})"))),
        None => Err(Error::BadRequest(format!(
            "no preset {spec:?}: give a JSON file or one of {}",
            list().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn parse_file(path: &Path) -> Result<Preset> {
    let text = crate::files::read_text(path).map_err(|e| Error::io("cannot read the preset", e, path))?;
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
    fn user_presets_round_trip_and_are_not_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let preset = Preset {
            name: "Mine".into(),
            prompt: Some("a cat".into()),
            steps: Some(9),
            ..Default::default()
        };
        save(dir.path(), "mine", &preset, false).expect("saves");
        assert_eq!(load_from(dir.path(), "mine").expect("loads"), preset);
        assert!(names_in(dir.path()).contains(&"mine".to_string()));
        assert!(matches!(save(dir.path(), "mine", &preset, false), Err(Error::WouldOverwrite { .. })));
        assert!(save(dir.path(), "../evil", &preset, false).is_err());
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let msg = load("no-such-preset").expect_err("refused").to_string();
        assert!(msg.contains("quality-sd15"), "{msg}");
    }
}
