//! Reference-pair metrics on 8-bit RGB: PSNR = 10·log10(255²/MSE) per picture, and SSIM with
//! torchmetrics' defaults (11×11 Gaussian window, σ = 1.5, k₁ = 0.01, k₂ = 0.03, reflect padding,
//! the mean over every position of the picture, data range 1 on [0, 1] values), each averaged over
//! pictures by the caller.

use image::RgbImage;

use crate::error::{Error, Result};

/// PSNR of one pair in dB; identical pictures give infinity.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    same_size(a, b)?;
    let sq: f64 =
        a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = sq / a.as_raw().len() as f64;
    Ok(10.0 * (255.0f64 * 255.0 / mse).log10())
}

/// SSIM of one pair (mean over channels and positions), as torchmetrics computes it.
pub fn ssim(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    same_size(a, b)?;
    let (w, h) = (a.width() as usize, a.height() as usize);
    const K: usize = 11;
    if w <= K / 2 || h <= K / 2 {
        return Err(Error::BadRequest(format!("SSIM needs pictures larger than {K}×{K}; got {w}×{h}")));
    }
    let g = gaussian(K, 1.5);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for c in 0..3 {
        let plane = |img: &RgbImage| -> Vec<f64> {
            img.as_raw().iter().skip(c).step_by(3).map(|&v| f64::from(v) / 255.0).collect()
        };
        let (x, y) = (plane(a), plane(b));
        let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
        let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
        let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
        let [mx, my, sxx, syy, sxy] = [&x, &y, &xx, &yy, &xy].map(|p| blur(p, w, h, &g));
        // torchmetrics 1.9 averages over the whole picture (earlier versions cropped the border).
        for i in 0..w * h {
            let (mu_x2, mu_y2, mu_xy) = (mx[i] * mx[i], my[i] * my[i], mx[i] * my[i]);
            let var_x = (sxx[i] - mu_x2).max(0.0);
            let var_y = (syy[i] - mu_y2).max(0.0);
            let cov = sxy[i] - mu_xy;
            total += ((2.0 * mu_xy + c1) * (2.0 * cov + c2)) / ((mu_x2 + mu_y2 + c1) * (var_x + var_y + c2));
            count += 1;
        }
    }
    Ok(total / count as f64)
}

fn same_size(a: &RgbImage, b: &RgbImage) -> Result<()> {
    if a.dimensions() != b.dimensions() {
        return Err(Error::BadRequest(format!(
            "paired pictures differ in size ({}×{} and {}×{})",
            a.width(),
            a.height(),
            b.width(),
            b.height()
        )));
    }
    Ok(())
}

fn gaussian(size: usize, sigma: f64) -> Vec<f64> {
    let half = (size as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..size).map(|i| (-((i as f64 - half) / sigma).powi(2) / 2.0).exp()).collect();
    let sum: f64 = g.iter().sum();
    g.into_iter().map(|v| v / sum).collect()
}

/// Mirror index for reflect padding (the edge is not repeated).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let i = if i < 0 { -i } else { i };
    (if i >= n { 2 * (n - 1) - i } else { i }) as usize
}

/// Separable Gaussian blur with reflect padding, same size out.
fn blur(p: &[f64], w: usize, h: usize, g: &[f64]) -> Vec<f64> {
    let r = (g.len() / 2) as isize;
    let mut tmp = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = g
                .iter()
                .enumerate()
                .map(|(k, &gk)| gk * p[y * w + reflect(x as isize + k as isize - r, w)])
                .sum();
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = g
                .iter()
                .enumerate()
                .map(|(k, &gk)| gk * tmp[reflect(y as isize + k as isize - r, h) * w + x])
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_image(seed: u32) -> RgbImage {
        let mut s = seed;
        RgbImage::from_fn(32, 24, |_, _| {
            let mut px = [0u8; 3];
            for v in &mut px {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *v = (s >> 16) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn identical_pictures() {
        let a = noise_image(1);
        assert!(psnr(&a, &a).expect("psnr").is_infinite());
        assert!((ssim(&a, &a).expect("ssim") - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_constant_offset() {
        let a = RgbImage::from_pixel(16, 16, image::Rgb([100, 100, 100]));
        let b = RgbImage::from_pixel(16, 16, image::Rgb([110, 110, 110]));
        // MSE 100 → 10·log10(65025/100)
        assert!((psnr(&a, &b).expect("psnr") - 28.130_803_608_679_1).abs() < 1e-9);
    }

    #[test]
    fn unrelated_noise_has_low_ssim() {
        let s = ssim(&noise_image(1), &noise_image(2)).expect("ssim");
        assert!(s < 0.1, "{s}");
    }
}
