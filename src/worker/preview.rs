//! Live previews: a linear projection of the four SD latent channels to RGB (the approximation
//! ComfyUI and A1111 use for their cheap previews), one output pixel per latent pixel. It costs
//! microseconds where a VAE decode costs seconds, so the studio can show every step.

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};

/// Rows: latent channels; columns: the R, G, B each contributes (SD 1.x/2.x VAE latent space).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// A picture of latents `[1, 4, h, w]` (or `[1, 9, …]`: the first four channels), `w × h` pixels.
pub fn latents_to_rgb(latents: &Tensor) -> Result<RgbImage> {
    let (_, channels, h, w) = latents.dims4()?;
    if channels < 4 {
        return Err(Error::BadRequest(format!("cannot preview {channels}-channel latents")));
    }
    let data: Vec<f32> = latents.narrow(1, 0, 4)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(project(&data, w, h))
}

/// Channel-major latent values (4 planes of `w·h`) to an RGB picture.
fn project(data: &[f32], w: usize, h: usize) -> RgbImage {
    let plane = w * h;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, px) in out.pixels_mut().enumerate() {
        for (c, channel) in px.0.iter_mut().enumerate() {
            let v: f32 = (0..4).map(|k| data[k * plane + i] * LATENT_RGB[k][c]).sum();
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
        let img = project(&data, 1, 1);
        let [r, g, b] = img.get_pixel(0, 0).0;
        assert!(b < 128 && r < 128 && g < 128 && b < r, "{r} {g} {b}");
    }
}
