//! Easel: a studio for Stable Diffusion with LoRA adapters and built-in quality metrics.
//!
//! The library holds the engine and everything around it: the generation engine, PNG export with
//! parameters, and model downloads. The `easel` binary puts a command line and
//! (with the `gui` feature) the desktop studio on top of it; both drive the engine through the
//! background worker or directly.

pub mod engine;
pub mod error;
pub mod export;
pub mod files;
pub mod history;
pub mod hub;
pub mod job;
pub mod memory;
pub mod metrics;
pub mod paths;
pub mod presets;
pub mod worker;

#[cfg(feature = "gui")]
pub mod gui;

pub use error::{Error, Result};

/// Easel's version and the git revision it was built from, e.g. `0.1.0 (3f2c1ab)`.
pub fn version() -> String {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("EASEL_GIT_REVISION"))
}
