//! How the command line words errors: a setting the engine names becomes the flag that sets it,
//! and a value clap refuses becomes one line, like every other error `easel` prints.

use std::process::ExitCode;

use easel::error::Setting;
use easel::Error;

/// The flag that sets `setting`.
pub fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::Prompt => "--prompt",
        Setting::NegativePrompt => "--negative",
        Setting::Sampler => "--sampler",
        Setting::Spacing => "--spacing",
        Setting::Steps => "--steps",
        Setting::Guidance => "--cfg",
        Setting::Width => "--width",
        Setting::Height => "--height",
        Setting::Batch => "--batch",
        Setting::Strength => "--strength",
        Setting::InitImage => "--init-image",
        Setting::Mask => "--mask",
        Setting::Noise => "--noise",
        Setting::LoraWeight => "--lora",
        Setting::Device => "--device",
        Setting::Precision => "--dtype",
        Setting::Prediction => "--prediction",
        Setting::Resize => "--resize",
        Setting::Emphasis => "--emphasis",
        Setting::ClipSkip => "--clip-skip",
        Setting::Rng => "--rng",
        Setting::Control => "--control",
    }
}

/// Parses a flag's value with the library's `FromStr`, keeping only what follows the setting's
/// name: clap already names the flag.
pub fn value<T: std::str::FromStr<Err = Error>>(text: &str) -> Result<T, String> {
    text.parse().map_err(|e| match e {
        Error::InvalidSetting { message, .. } => message,
        other => other.to_string(),
    })
}

/// The sentence `easel` prints for `err` (without the leading "error: ").
pub fn describe(err: &anyhow::Error) -> String {
    match err.downcast_ref::<Error>() {
        Some(e @ Error::InvalidSetting { .. }) => e.describe_with(|s| flag(s).to_string()),
        Some(Error::WouldOverwrite { path }) => {
            format!("{} already exists; choose another name or pass --overwrite", path.display())
        }
        _ => format!("{err:#}"),
    }
}

/// Prints a command-line parsing failure: help and version as clap shows them, a refused value
/// as one line (clap's own rendering adds a blank line and a hint), and returns the exit code.
pub fn usage(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::ValueValidation => {
            let text = err.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: invalid value").trim_end());
            ExitCode::from(2)
        }
        _ => {
            let code = err.exit_code();
            // Printing help to a closed pipe is not worth an error of its own.
            let _ = err.print();
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_flag() {
        for s in Setting::ALL {
            assert!(flag(s).starts_with('-'), "{s:?}");
        }
        let e = anyhow::Error::from(Error::setting(Setting::Steps, "0 must be between 1 and 1000"));
        assert_eq!(describe(&e), "--steps 0 must be between 1 and 1000");
    }
}
