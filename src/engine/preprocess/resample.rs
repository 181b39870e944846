//! Pillow's Lanczos resize (`Image.resize(size, Image.LANCZOS)`) to the bit, as diffusers' image
//! processor resizes control pictures: a separable filter (a = 3) widened by the scale when
//! shrinking, coefficients in Pillow's 22-bit fixed point, the horizontal pass first into an 8-bit
//! picture of just the rows the vertical pass reads. The `image` crate's Lanczos differs by a level
//! here and there, which is enough to move a ControlNet's picture.

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per output pixel: the first input pixel read and the fixed-point weights.
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = 3.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            let inv = 1.0 / filter_scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
            let weights: Vec<f64> = (xmin..xmax).map(|x| lanczos((x as f64 - center + 0.5) * inv)).collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let v = w * f64::from(1u32 << PRECISION_BITS);
                    (if w < 0.0 { v - 0.5 } else { v + 0.5 }) as i64
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `picture` resized to `width`×`height` exactly as Pillow's LANCZOS does it.
pub fn lanczos_resize(picture: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = picture.dimensions();
    if (w, h) == (width, height) {
        return picture.clone();
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let vertical = coefficients(h, height);
    // Only the rows the vertical pass reads go through the horizontal one.
    let (first_row, last_row) = if h == height {
        (0, h as usize)
    } else {
        let first = vertical.first().map_or(0, |(start, _)| *start);
        let last = vertical.last().map_or(h as usize, |(start, k)| start + k.len());
        (first, last)
    };
    let mid = if w == width {
        RgbImage::from_fn(w, (last_row - first_row) as u32, |x, y| {
            *picture.get_pixel(x, y + first_row as u32)
        })
    } else {
        let horizontal = coefficients(w, width);
        RgbImage::from_fn(width, (last_row - first_row) as u32, |x, y| {
            let (start, k) = &horizontal[x as usize];
            let mut out = [0u8; 3];
            for (c, slot) in out.iter_mut().enumerate() {
                let mut sum = half;
                for (i, weight) in k.iter().enumerate() {
                    sum +=
                        i64::from(picture.get_pixel((start + i) as u32, y + first_row as u32).0[c]) * weight;
                }
                *slot = clip(sum);
            }
            image::Rgb(out)
        })
    };
    if h == height {
        return mid;
    }
    RgbImage::from_fn(width, height, |x, y| {
        let (start, k) = &vertical[y as usize];
        let mut out = [0u8; 3];
        for (c, slot) in out.iter_mut().enumerate() {
            let mut sum = half;
            for (i, weight) in k.iter().enumerate() {
                sum += i64::from(mid.get_pixel(x, (start + i - first_row) as u32).0[c]) * weight;
            }
            *slot = clip(sum);
        }
        image::Rgb(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_flat_stays_flat() {
        for (i, o) in [(192, 128), (64, 150), (7, 3)] {
            for (_, k) in coefficients(i, o) {
                let sum: i64 = k.iter().sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{i}->{o}: {sum}");
            }
        }
        let flat = RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 90]));
        assert!(lanczos_resize(&flat, 17, 51).pixels().all(|p| p.0 == [200, 10, 90]));
    }
}
