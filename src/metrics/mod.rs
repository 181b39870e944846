//! Reference-based quality metrics that print the numbers the reference tools print: FID
//! (pytorch-fid 0.3.0, or torch-fidelity's TF1 preprocessing), KID and IS (torch-fidelity 0.4.0,
//! seeded the same way), PSNR, and SSIM (torchmetrics' defaults). Independent of the generation
//! engine; the FID Inception network runs on candle.

pub mod cache;
pub mod evaluate;
pub mod fid;
pub mod images;
pub mod inception;
pub mod inception_score;
pub mod kid;
pub mod npz;
pub mod numpy_rng;
pub mod pixel;
pub mod resize;

pub use evaluate::{evaluate, extract_folder, EvalOptions, Extractor, Reference, SetFeatures, SetReport};
pub use resize::ResizeMode;
