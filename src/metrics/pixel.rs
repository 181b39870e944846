//! Reference-pair metrics on 8-bit RGB: PSNR = 10·log10(255²/MSE) per picture, and SSIM with
//! torchmetrics' defaults (11×11 Gaussian window, σ = 1.5, k₁ = 0.01, k₂ = 0.03, reflect padding,
//! the mean over every position of the picture, data range 1 on [0, 1] values), each averaged over
//! pictures by the caller. SSIM works one channel and one band of rows at a time, so its extra
//! memory is a few MiB whatever the picture's height, with the same arithmetic as whole planes.

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

/// The SSIM window's side (torchmetrics' default Gaussian kernel).
const WINDOW: usize = 11;
/// The smallest side SSIM accepts: reflect padding by half a window needs more rows than that.
pub const SSIM_MIN_SIDE: usize = WINDOW / 2 + 1;
/// Rows per band aim at this many pixels, so a band's five blurred f64 planes stay near 20 MiB
/// whatever the picture's width.
const BAND_PIXELS: usize = 1 << 19;
/// Fewest rows per band: below this the halo rows each band recomputes dominate.
const MIN_BAND_ROWS: usize = 16;

/// SSIM of one pair (mean over channels and positions), as torchmetrics computes it.
///
/// Memory stays bounded whatever the picture's size: one channel at a time, the blurred planes
/// are computed a band of rows at a time (plus the window's halo), never for the whole picture.
/// The arithmetic and summation order are those of the whole-plane computation, so banding does
/// not change the result.
pub fn ssim(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    let rows = (BAND_PIXELS / (a.width() as usize).max(1)).max(MIN_BAND_ROWS);
    ssim_in_bands(a, b, rows)
}

/// [`ssim`] with `band_rows` output rows per band (at least 1).
fn ssim_in_bands(a: &RgbImage, b: &RgbImage, band_rows: usize) -> Result<f64> {
    same_size(a, b)?;
    let (w, h) = (a.width() as usize, a.height() as usize);
    if w < SSIM_MIN_SIDE || h < SSIM_MIN_SIDE {
        return Err(Error::BadRequest(format!(
            "SSIM needs pictures of at least {SSIM_MIN_SIDE}×{SSIM_MIN_SIDE} pixels (its {WINDOW}×{WINDOW} \
             window is mirrored at the edges); got {w}×{h}"
        )));
    }
    let g = gaussian(WINDOW, 1.5);
    let r = WINDOW / 2;
    let band_rows = band_rows.clamp(1, h);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    // Horizontally blurred x, y, x², y², xy for a band's rows and its halo, row-major.
    let halo_rows = band_rows + 2 * r;
    let mut horizontal: [Vec<f64>; 5] = std::array::from_fn(|_| vec![0.0; halo_rows * w]);
    // One output row of the vertical pass, for each of the five quantities.
    let mut vertical: [Vec<f64>; 5] = std::array::from_fn(|_| vec![0.0; w]);
    // One source row, reflect-padded, for each picture.
    let mut padded = [vec![0.0; w + 2 * r], vec![0.0; w + 2 * r]];
    let mut total = 0.0;
    for c in 0..3 {
        for y0 in (0..h).step_by(band_rows) {
            let y1 = (y0 + band_rows).min(h);
            // Rows y0 − r … y1 + r − 1; those outside the picture mirror rows inside it.
            for (slot, j) in (y0 as isize - r as isize..(y1 + r) as isize).enumerate() {
                let src = reflect(j, h);
                for (pad, img) in padded.iter_mut().zip([a, b]) {
                    let row = &img.as_raw()[src * w * 3..(src + 1) * w * 3];
                    for (i, v) in pad.iter_mut().enumerate() {
                        *v = f64::from(row[reflect(i as isize - r as isize, w) * 3 + c]) / 255.0;
                    }
                }
                let [px, py] = &padded;
                let out = slot * w;
                for x in 0..w {
                    let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for (k, &gk) in g.iter().enumerate() {
                        let (p, q) = (px[x + k], py[x + k]);
                        sx += gk * p;
                        sy += gk * q;
                        sxx += gk * (p * p);
                        syy += gk * (q * q);
                        sxy += gk * (p * q);
                    }
                    for (plane, v) in horizontal.iter_mut().zip([sx, sy, sxx, syy, sxy]) {
                        plane[out + x] = v;
                    }
                }
            }
            for y in y0..y1 {
                for (acc, plane) in vertical.iter_mut().zip(&horizontal) {
                    acc.fill(0.0);
                    for (k, &gk) in g.iter().enumerate() {
                        let row = &plane[(y - y0 + k) * w..(y - y0 + k + 1) * w];
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += gk * v;
                        }
                    }
                }
                let [mx, my, sxx, syy, sxy] = &vertical;
                // torchmetrics 1.9 averages over the whole picture (earlier versions cropped the border).
                for i in 0..w {
                    let (mu_x2, mu_y2, mu_xy) = (mx[i] * mx[i], my[i] * my[i], mx[i] * my[i]);
                    let var_x = (sxx[i] - mu_x2).max(0.0);
                    let var_y = (syy[i] - mu_y2).max(0.0);
                    let cov = sxy[i] - mu_xy;
                    total += ((2.0 * mu_xy + c1) * (2.0 * cov + c2))
                        / ((mu_x2 + mu_y2 + c1) * (var_x + var_y + c2));
                }
            }
        }
    }
    Ok(total / (3 * w * h) as f64)
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

    /// The whole-plane SSIM Easel computed before banding (f64 planes for the whole picture).
    fn whole_plane_ssim(a: &RgbImage, b: &RgbImage) -> f64 {
        let (w, h) = (a.width() as usize, a.height() as usize);
        let g = gaussian(WINDOW, 1.5);
        let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
        let r = (g.len() / 2) as isize;
        // One pass of the separable window along x (`step` 1) or y (`step` w), mirrored at the edge.
        let pass = |p: &[f64], along_x: bool| -> Vec<f64> {
            let (step, len) = if along_x { (1, w) } else { (w, h) };
            let mut out = vec![0.0; w * h];
            for y in 0..h {
                for x in 0..w {
                    let (at, base) = if along_x { (x, y * w) } else { (y, x) };
                    out[y * w + x] = g
                        .iter()
                        .enumerate()
                        .map(|(k, &gk)| gk * p[base + reflect(at as isize + k as isize - r, len) * step])
                        .sum();
                }
            }
            out
        };
        let blur = |p: &[f64]| pass(&pass(p, true), false);
        let (mut total, mut count) = (0.0, 0usize);
        for c in 0..3 {
            let plane = |img: &RgbImage| -> Vec<f64> {
                img.as_raw().iter().skip(c).step_by(3).map(|&v| f64::from(v) / 255.0).collect()
            };
            let (x, y) = (plane(a), plane(b));
            let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
            let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
            let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
            let [mx, my, sxx, syy, sxy] = [&x, &y, &xx, &yy, &xy].map(|p| blur(p));
            for i in 0..w * h {
                let (mu_x2, mu_y2, mu_xy) = (mx[i] * mx[i], my[i] * my[i], mx[i] * my[i]);
                let var_x = (sxx[i] - mu_x2).max(0.0);
                let var_y = (syy[i] - mu_y2).max(0.0);
                let cov = sxy[i] - mu_xy;
                total +=
                    ((2.0 * mu_xy + c1) * (2.0 * cov + c2)) / ((mu_x2 + mu_y2 + c1) * (var_x + var_y + c2));
                count += 1;
            }
        }
        total / count as f64
    }

    /// A smooth picture with noise on top, so SSIM is neither 0 nor 1.
    fn textured(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed;
        RgbImage::from_fn(w, h, |x, y| {
            let mut px = [0u8; 3];
            for (c, v) in px.iter_mut().enumerate() {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let smooth = 128.0 + 100.0 * ((x as f64 * 0.05 + c as f64).sin() * (y as f64 * 0.07).cos());
                *v = (smooth + f64::from((s >> 16) as u8 % 40) - 20.0).clamp(0.0, 255.0) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn bands_give_exactly_the_whole_plane_result() {
        let (a, b) = (textured(157, 103, 1), textured(157, 103, 2));
        let expected = whole_plane_ssim(&a, &b);
        assert!(expected > 0.2 && expected < 0.99, "{expected}");
        // One row per band, odd bands, bands shorter than the window, the default, one band.
        for rows in [1, 3, 5, 7, 11, 16, 64, 103, 1000] {
            assert_eq!(ssim_in_bands(&a, &b, rows).expect("ssim"), expected, "{rows} rows per band");
        }
        assert_eq!(ssim(&a, &b).expect("ssim"), expected);
        // The smallest accepted size, where the mirrored halo covers nearly the whole picture.
        let (a, b) = (textured(6, 6, 3), textured(6, 6, 4));
        for rows in [1, 2, 6] {
            assert_eq!(ssim_in_bands(&a, &b, rows).expect("ssim"), whole_plane_ssim(&a, &b));
        }
    }

    #[test]
    fn pictures_smaller_than_the_window_are_refused_with_a_sentence() {
        let a = RgbImage::new(4, 4);
        let err = ssim(&a, &a).expect_err("too small").to_string();
        assert!(err.contains("at least 6×6") && err.contains("got 4×4"), "{err}");
        let err = ssim(&a, &RgbImage::new(8, 8)).expect_err("sizes differ").to_string();
        assert!(err.contains("differ in size"), "{err}");
    }

    #[test]
    fn unrelated_noise_has_low_ssim() {
        let s = ssim(&noise_image(1), &noise_image(2)).expect("ssim");
        assert!(s < 0.1, "{s}");
    }
}
