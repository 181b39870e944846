//! Live previews. With the family's tiny decoder (TAESD, TAESDXL) loaded, a preview is a real
//! picture at full size; without it, a linear projection of the four latent channels to RGB (the approximation
//! ComfyUI and A1111 use for their cheap previews), one output pixel per latent pixel, which costs
//! microseconds. Previews show the clean latents the sampler predicts, not the noisy ones it holds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::engine::tiny_vae::TinyDecoder;
use crate::engine::Family;
use crate::error::{Error, Result};

/// The share of a job's time previews may take: on a CPU a tiny-decoder preview at 512² costs about
/// a seventh of a guided step, so most steps get one; on a GPU every step does.
const PREVIEW_SHARE: f64 = 0.1;

/// Which previews the loaded model gets, as the studio shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum PreviewKind {
    /// The colour projection: no tiny decoder is on this computer.
    Approximate,
    /// The tiny decoder from this file or folder.
    TinyDecoder(PathBuf),
    /// A tiny decoder was found but could not be used (the message says why); previews fall back
    /// to the colour projection.
    Broken(String),
}

/// Draws previews for one loaded model.
pub(crate) struct Previewer {
    tiny: Option<TinyDecoder>,
    /// The colour projection of the family's latent space.
    rgb: &'static LatentRgb,
    /// Time spent on previews in the current job.
    spent: Duration,
}

impl Previewer {
    /// The tiny decoder at `path` (or the one found on this computer when `None`) on the model's
    /// device and dtype; the colour projection when there is none or it does not load.
    pub fn load(path: Option<PathBuf>, device: &Device, dtype: DType, family: Family) -> (Self, PreviewKind) {
        let rgb = match family {
            Family::Sdxl => &SDXL_LATENT_RGB,
            Family::Sd1 | Family::Sd2 => &LATENT_RGB,
        };
        let with = |tiny| Self { tiny, rgb, spent: Duration::ZERO };
        let Some(path) = path.or_else(|| crate::hub::find_preview_decoder(family)) else {
            return (with(None), PreviewKind::Approximate);
        };
        match TinyDecoder::load(&path, device, dtype) {
            Ok(tiny) => (with(Some(tiny)), PreviewKind::TinyDecoder(path)),
            Err(e) => (with(None), PreviewKind::Broken(e.in_studio_words())),
        }
    }

    /// Call when a job starts: its previews get their own time budget.
    pub fn start_job(&mut self) {
        self.spent = Duration::ZERO;
    }

    /// A preview of `latents` `job_elapsed` into the job, or `None` when the tiny decoder's time
    /// budget is spent (the window keeps showing the last one).
    pub fn picture(&mut self, latents: &Tensor, job_elapsed: Duration) -> Option<RgbImage> {
        let Some(tiny) = &self.tiny else {
            return project_latents(latents, self.rgb).ok();
        };
        if self.spent.as_secs_f64() > PREVIEW_SHARE * job_elapsed.as_secs_f64() {
            return None;
        }
        let started = Instant::now();
        let picture = latents
            .narrow(1, 0, 4)
            .map_err(Error::from)
            .and_then(|l| tiny.decode(&l))
            .and_then(|pixels| crate::engine::pipeline::pixels_to_image(&pixels));
        self.spent += started.elapsed();
        // A preview that fails is not worth failing the job for; the projection stands in.
        picture.or_else(|_| project_latents(latents, self.rgb)).ok()
    }
}

/// Rows: latent channels; columns: the R, G, B each contributes.
type LatentRgb = [[f32; 3]; 4];

/// SD 1.x/2.x's latent space (ComfyUI's factors).
const LATENT_RGB: LatentRgb = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// SDXL's latent space (ComfyUI's factors for it): another autoencoder, other colours.
const SDXL_LATENT_RGB: LatentRgb = [
    [0.3920, 0.4054, 0.4549],
    [-0.2634, -0.0196, 0.0653],
    [0.0568, 0.1687, -0.0755],
    [-0.3112, -0.2359, -0.2076],
];

/// A picture of SD 1.x/2.x latents `[1, 4, h, w]` (or `[1, 9, …]`: the first four channels),
/// `w × h` pixels.
pub fn latents_to_rgb(latents: &Tensor) -> Result<RgbImage> {
    project_latents(latents, &LATENT_RGB)
}

fn project_latents(latents: &Tensor, rgb: &LatentRgb) -> Result<RgbImage> {
    let (_, channels, h, w) = latents.dims4()?;
    if channels < 4 {
        return Err(Error::Internal(format!("cannot preview {channels}-channel latents")));
    }
    let data: Vec<f32> = latents.narrow(1, 0, 4)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(project(&data, w, h, rgb))
}

/// Channel-major latent values (4 planes of `w·h`) to an RGB picture.
fn project(data: &[f32], w: usize, h: usize, rgb: &LatentRgb) -> RgbImage {
    let plane = w * h;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, px) in out.pixels_mut().enumerate() {
        for (c, channel) in px.0.iter_mut().enumerate() {
            let v: f32 = (0..4).map(|k| data[k * plane + i] * rgb[k][c]).sum();
            // The projection lands roughly in [-1, 1], like the VAE's output.
            *channel = (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tiny_decoder_every_step_gets_the_projection() {
        let mut p = Previewer { tiny: None, rgb: &LATENT_RGB, spent: Duration::from_secs(100) };
        let t = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).expect("tensor");
        assert_eq!(p.picture(&t, Duration::ZERO).expect("preview").dimensions(), (2, 2));
    }

    #[test]
    fn the_tiny_decoder_draws_full_size_previews_within_its_time_share() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-taesd");
        let (mut p, kind) = Previewer::load(Some(fixture.clone()), &Device::Cpu, DType::F32, Family::Sd1);
        assert_eq!(kind, PreviewKind::TinyDecoder(fixture));
        let latents = Tensor::ones((1, 4, 3, 5), DType::F32, &Device::Cpu).expect("tensor");
        let first = p.picture(&latents, Duration::from_millis(1)).expect("the first step gets one");
        assert_eq!(first.dimensions(), (40, 24), "eight times the latent size");
        // Spent more than a tenth of the job: the next step goes without.
        p.spent = Duration::from_secs(2);
        assert!(p.picture(&latents, Duration::from_secs(10)).is_none());
        assert!(p.picture(&latents, Duration::from_secs(30)).is_some());
        p.start_job();
        assert!(p.picture(&latents, Duration::ZERO).is_some(), "a new job starts with a fresh budget");
    }

    #[test]
    fn a_damaged_tiny_decoder_is_reported_and_the_projection_stands_in() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("taesd_decoder.safetensors");
        std::fs::write(&file, b"not a safetensors file").expect("write");
        let (mut p, kind) = Previewer::load(Some(file), &Device::Cpu, DType::F32, Family::Sdxl);
        assert!(
            matches!(&kind, PreviewKind::Broken(why) if why.contains("taesd_decoder.safetensors")),
            "{kind:?}"
        );
        let latents = Tensor::zeros((1, 4, 3, 5), DType::F32, &Device::Cpu).expect("tensor");
        assert_eq!(p.picture(&latents, Duration::ZERO).expect("projection").dimensions(), (5, 3));
    }

    #[test]
    fn zero_latents_are_mid_grey_and_keep_their_size() {
        let t = Tensor::zeros((1, 4, 3, 5), DType::F32, &candle_core::Device::Cpu).expect("tensor");
        let img = latents_to_rgb(&t).expect("preview");
        assert_eq!(img.dimensions(), (5, 3));
        assert!(img.pixels().all(|p| p.0 == [128, 128, 128]));
    }

    #[test]
    fn each_channel_moves_colour_its_own_way() {
        let mut data = vec![0.0f32; 4];
        data[3] = 1.0; // the fourth channel darkens, blue most of all
        let img = project(&data, 1, 1, &LATENT_RGB);
        let [r, g, b] = img.get_pixel(0, 0).0;
        assert!(b < 128 && r < 128 && g < 128 && b < r, "{r} {g} {b}");
    }
}
