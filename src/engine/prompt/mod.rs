//! Prompts as AUTOMATIC1111 reads them, so that prompts copied from civitai and A1111's PNGs give
//! the picture they gave there: `AND` composition with per-part weights, prompt editing and
//! alternation per step ([`schedule`]), emphasis weights per token ([`attention`], or ComfyUI's
//! reading in [`comfy`]), `BREAK`, and the 75-token chunks with textual-inversion embeddings in
//! them ([`chunks`]). The weights are applied to the text encoder's output in
//! [`crate::engine::conditioning`], the way the chosen [`Emphasis`] says.

pub mod attention;
pub mod chunks;
pub mod comfy;
pub mod schedule;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Setting};

/// A piece of a prompt after emphasis parsing.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    /// Text and the weight of its tokens.
    Text(String, f64),
    /// `BREAK`: the rest starts a new chunk.
    Break,
}

/// How `(word:1.2)` weights act on the text encoder's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Emphasis {
    /// A1111's default: scale each token's vectors, then restore the chunk's mean.
    #[default]
    Original,
    /// Scale each token's vectors, nothing more (A1111: "seems to work better for SDXL").
    NoNorm,
    /// Read the brackets but give every token weight 1 (`BREAK` still works).
    Ignore,
    /// No emphasis syntax at all: brackets and `BREAK` are plain text.
    None,
    /// ComfyUI's: `(x:w)` sets the weight, and each token moves from the empty prompt's encoding
    /// by it: `z_empty + (z − z_empty)·w`.
    Comfy,
}

impl Emphasis {
    /// Every mode, in menu order.
    pub const ALL: [Emphasis; 5] =
        [Emphasis::Original, Emphasis::NoNorm, Emphasis::Ignore, Emphasis::None, Emphasis::Comfy];

    /// The command-line name.
    pub fn id(self) -> &'static str {
        match self {
            Emphasis::Original => "original",
            Emphasis::NoNorm => "no-norm",
            Emphasis::Ignore => "ignore",
            Emphasis::None => "none",
            Emphasis::Comfy => "comfy",
        }
    }

    /// The name A1111 writes in its `Emphasis:` field.
    pub fn a1111_name(self) -> &'static str {
        match self {
            Emphasis::Original => "Original",
            Emphasis::NoNorm => "No norm",
            Emphasis::Ignore => "Ignore",
            Emphasis::None => "None",
            Emphasis::Comfy => "Comfy",
        }
    }

    /// The mode an `Emphasis:` field names.
    pub fn from_a1111(name: &str) -> Option<Self> {
        Emphasis::ALL.into_iter().find(|e| e.a1111_name().eq_ignore_ascii_case(name.trim()))
    }

    /// The prompt's pieces and weights as this mode reads them.
    pub fn parse(self, text: &str) -> Vec<Segment> {
        match self {
            Emphasis::Original | Emphasis::NoNorm => attention::parse(text),
            Emphasis::Ignore => attention::parse(text)
                .into_iter()
                .map(|s| match s {
                    Segment::Text(t, _) => Segment::Text(t, 1.0),
                    Segment::Break => Segment::Break,
                })
                .collect(),
            Emphasis::None => vec![Segment::Text(text.to_string(), 1.0)],
            Emphasis::Comfy => comfy::parse(text),
        }
    }
}

impl fmt::Display for Emphasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Emphasis {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Emphasis::ALL.into_iter().find(|e| e.id() == s).ok_or_else(|| {
            let names: Vec<&str> = Emphasis::ALL.iter().map(|e| e.id()).collect();
            Error::setting(
                Setting::Emphasis,
                format!("{s:?} is not an emphasis mode; choose one of {}", names.join(", ")),
            )
        })
    }
}

/// A1111's composable prompts: the prompt split at each `AND` word, each part with the weight a
/// trailing `:w` gives it (1 without), its trailing whitespace dropped, as
/// `get_multicond_prompt_list` reads them. A prompt without `AND` is one part.
pub fn composable_parts(prompt: &str) -> Vec<(String, f64)> {
    static AND: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static WEIGHT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let and = AND.get_or_init(|| regex::Regex::new(r"\bAND\b").expect("a valid pattern"));
    let weight = WEIGHT.get_or_init(|| {
        regex::Regex::new(r"^(?s)(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$").expect("a valid pattern")
    });
    and.split(prompt)
        .map(|part| match weight.captures(part) {
            Some(c) => {
                let text = c.get(1).map_or("", |m| m.as_str()).to_string();
                let w = c.get(2).and_then(|m| m.as_str().parse::<f64>().ok()).unwrap_or(1.0);
                (text, w)
            }
            None => (part.to_string(), 1.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn and_splits_and_weighs_parts() {
        assert_eq!(
            composable_parts("a cat AND a dog:0.5 "),
            [("a cat".to_string(), 1.0), (" a dog".to_string(), 0.5)]
        );
        assert_eq!(composable_parts("ANDROID (x:1.2)"), [("ANDROID (x:1.2)".to_string(), 1.0)]);
    }

    #[test]
    fn emphasis_names_round_trip() {
        for e in Emphasis::ALL {
            assert_eq!(e.id().parse::<Emphasis>().expect("parses"), e);
            assert_eq!(Emphasis::from_a1111(e.a1111_name()), Some(e));
        }
    }
}
