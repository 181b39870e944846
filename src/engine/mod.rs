//! The generation engine: pure compute on candle, no UI and no threads of its own. A
//! `GenerationRequest` goes in with a progress callback and a cancel flag; pictures and timings
//! come out.

mod blocks;
pub mod checkpoint;
pub mod clip;
pub mod conditioning;
pub mod config;
pub mod controlnet;
pub mod device;
pub mod embeddings;
pub mod family;
pub mod kernels;
pub mod live;
pub mod lora;
pub mod model;
pub mod ops;
pub mod pickle;
pub mod pipeline;
pub mod preprocess;
pub mod prompt;
pub mod request;
pub mod rng;
pub mod samplers;
pub mod tiny_vae;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod vae_file;
pub mod weights;

pub use family::{Family, SdxlLine};
pub use model::StableDiffusion;
pub use pipeline::{generate, generate_each, GeneratedImage, GenerationInputs, Progress, Timings};
pub use request::{GenerationRequest, LoraSpec};
pub use samplers::SamplerKind;
