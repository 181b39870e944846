//! The library's one error type.
//!
//! Every message is a sentence a painter can act on: what went wrong, what was expected, what to
//! do, with the offending path last. The binary prints these with `{:#}` and exits non-zero.

use std::path::{Path, PathBuf};

/// Everything that can go wrong inside Easel's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder the user named does not exist.
    #[error("{what} not found: {}", path.display())]
    NotFound {
        /// What was being looked for ("model", "init image", …).
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file exists but is not what Easel expected.
    #[error("{message}: {}", path.display())]
    BadFile {
        /// The sentence explaining what was wrong and what to do.
        message: String,
        /// The file.
        path: PathBuf,
    },
    /// One setting the user chose is not usable. The message follows the setting's name, so each
    /// surface puts its own word in front: the CLI its flag, the studio its control's label.
    #[error("{} {message}", setting.name())]
    InvalidSetting {
        /// Which setting.
        setting: Setting,
        /// What is wrong with it and what to do, e.g. "0 must be between 1 and 1000".
        message: String,
    },
    /// The user asked for something that cannot be done, not tied to one setting (too few
    /// pictures for a metric, an unknown preset…).
    #[error("{0}")]
    BadRequest(String),
    /// The model, adapter or config uses something Easel does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// The numbers went out of range (NaN or infinity) or a decomposition failed.
    #[error("{0}")]
    Numerical(String),
    /// An invariant of Easel's own broke: a bug to report, not something the user did.
    #[error("internal error (please report it): {0}")]
    Internal(String),
    /// The operation was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
    /// The output file exists and overwriting was not asked for.
    #[error("{} already exists; choose another name or allow overwriting", path.display())]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a file failed at the operating-system level.
    #[error("{message}: {source}: {}", path.display())]
    Io {
        /// What Easel was doing.
        message: String,
        /// The underlying failure.
        source: std::io::Error,
        /// The file involved.
        path: PathBuf,
    },
    /// A tensor computation failed (usually a bug or an out-of-memory condition).
    #[error("computation failed: {0}")]
    Compute(candle_core::Error),
    /// Downloading from the model hub failed.
    #[error("{0}")]
    Hub(String),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<candle_core::Error> for Error {
    /// Keeps candle's message and drops the backtrace it attaches when `RUST_BACKTRACE` is set:
    /// users get a sentence, not a stack.
    fn from(err: candle_core::Error) -> Self {
        let mut err = err;
        while let candle_core::Error::WithBacktrace { inner, .. } = err {
            err = *inner;
        }
        Error::Compute(err)
    }
}

/// The settings a request is made of, named apart from how each surface spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The prompt.
    Prompt,
    /// The negative prompt.
    NegativePrompt,
    /// The sampler.
    Sampler,
    /// How the sampler spreads its timesteps.
    Spacing,
    /// Denoising steps.
    Steps,
    /// Classifier-free guidance scale.
    Guidance,
    /// Picture width.
    Width,
    /// Picture height.
    Height,
    /// Pictures per request.
    Batch,
    /// img2img strength.
    Strength,
    /// The img2img / inpainting start picture.
    InitImage,
    /// The inpainting mask.
    Mask,
    /// Starting noise given as a tensor.
    Noise,
    /// An adapter's weight.
    LoraWeight,
    /// The compute device.
    Device,
    /// The weights' precision.
    Precision,
    /// What the model predicts (epsilon or v).
    Prediction,
    /// How pictures are resized for Inception.
    Resize,
    /// How emphasis weights act.
    Emphasis,
    /// Text-encoder layers skipped from the end.
    ClipSkip,
    /// Which random generator draws the noise.
    Rng,
    /// A ControlNet unit.
    Control,
}

impl Setting {
    /// Every setting, for tests that check each surface names all of them.
    pub const ALL: [Setting; 22] = [
        Setting::Prompt,
        Setting::NegativePrompt,
        Setting::Sampler,
        Setting::Spacing,
        Setting::Steps,
        Setting::Guidance,
        Setting::Width,
        Setting::Height,
        Setting::Batch,
        Setting::Strength,
        Setting::InitImage,
        Setting::Mask,
        Setting::Noise,
        Setting::LoraWeight,
        Setting::Device,
        Setting::Precision,
        Setting::Prediction,
        Setting::Resize,
        Setting::Emphasis,
        Setting::ClipSkip,
        Setting::Rng,
        Setting::Control,
    ];

    /// The plain name used when no surface translates it ("steps", "guidance scale").
    pub fn name(self) -> &'static str {
        match self {
            Setting::Prompt => "prompt",
            Setting::NegativePrompt => "negative prompt",
            Setting::Sampler => "sampler",
            Setting::Spacing => "timestep spacing",
            Setting::Steps => "steps",
            Setting::Guidance => "guidance scale",
            Setting::Width => "width",
            Setting::Height => "height",
            Setting::Batch => "batch",
            Setting::Strength => "strength",
            Setting::InitImage => "start picture",
            Setting::Mask => "mask",
            Setting::Noise => "starting noise",
            Setting::LoraWeight => "LoRA weight",
            Setting::Device => "device",
            Setting::Precision => "precision",
            Setting::Prediction => "prediction type",
            Setting::Resize => "resize mode",
            Setting::Emphasis => "emphasis mode",
            Setting::ClipSkip => "clip skip",
            Setting::Rng => "noise source",
            Setting::Control => "ControlNet unit",
        }
    }

    /// The label of the studio control that sets it.
    pub fn label(self) -> &'static str {
        match self {
            Setting::Prompt => "Prompt",
            Setting::NegativePrompt => "Negative prompt",
            Setting::Sampler => "Sampler",
            Setting::Spacing => "Spacing",
            Setting::Steps => "Steps",
            Setting::Guidance => "CFG",
            Setting::Width => "Width",
            Setting::Height => "Height",
            Setting::Batch => "Batch",
            Setting::Strength => "Strength",
            Setting::InitImage => "The canvas picture",
            Setting::Mask => "The inpainting mask",
            Setting::Noise => "Starting noise",
            Setting::LoraWeight => "LoRA weight",
            Setting::Device => "Device",
            Setting::Precision => "Precision",
            Setting::Prediction => "Prediction type",
            Setting::Resize => "Resize mode",
            Setting::Emphasis => "Emphasis",
            Setting::ClipSkip => "Clip skip",
            Setting::Rng => "Noise",
            Setting::Control => "ControlNet",
        }
    }
}

impl Error {
    /// An `InvalidSetting` error: `message` continues after the setting's name.
    pub fn setting(setting: Setting, message: impl Into<String>) -> Self {
        Error::InvalidSetting { setting, message: message.into() }
    }

    /// The sentence the studio shows: a setting is named by its control's label.
    pub fn in_studio_words(&self) -> String {
        match self {
            Error::WouldOverwrite { path } => {
                format!("{} already exists; choose another name", path.display())
            }
            other => other.describe_with(|s| s.label().to_string()),
        }
    }

    /// The same error with the setting named by `word` (a flag, a label) instead of its plain
    /// name; other errors read as they display.
    pub fn describe_with(&self, word: impl Fn(Setting) -> String) -> String {
        match self {
            Error::InvalidSetting { setting, message } => format!("{} {message}", word(*setting)),
            other => other.to_string(),
        }
    }

    /// A `BadFile` error with a message and a path.
    pub fn bad_file(message: impl Into<String>, path: impl AsRef<Path>) -> Self {
        Error::BadFile { message: message.into(), path: path.as_ref().to_path_buf() }
    }

    /// A `NotFound` error.
    pub fn not_found(what: impl Into<String>, path: impl AsRef<Path>) -> Self {
        Error::NotFound { what: what.into(), path: path.as_ref().to_path_buf() }
    }

    /// An `Io` error.
    pub fn io(message: impl Into<String>, source: std::io::Error, path: impl AsRef<Path>) -> Self {
        Error::Io { message: message.into(), source, path: path.as_ref().to_path_buf() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_studio_names_settings_by_their_labels_and_never_by_flags() {
        for setting in Setting::ALL {
            let e = Error::setting(setting, "2 is not usable");
            let words = e.in_studio_words();
            assert!(words.starts_with(setting.label()) && !words.contains("--"), "{words}");
            assert!(e.to_string().starts_with(setting.name()), "{e}");
        }
        let e = Error::WouldOverwrite { path: "a.png".into() };
        assert!(!e.in_studio_words().contains("--") && !e.to_string().contains("--"));
    }
}
