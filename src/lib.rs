//! Easel: a studio for Stable Diffusion with LoRA adapters and built-in quality metrics.
//!
//! The library holds everything but the user interface: the generation engine, PNG export with
//! parameters, and model downloads. The `easel` binary puts a command line on top of it.

pub mod engine;
pub mod error;
pub mod export;
pub mod hub;
pub mod metrics;
pub mod presets;

pub use error::{Error, Result};

/// Easel's version and the git revision it was built from, e.g. `0.1.0 (3f2c1ab)`.
pub fn version() -> String {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("EASEL_GIT_REVISION"))
}
