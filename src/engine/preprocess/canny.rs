//! Canny edges exactly as OpenCV's `cv2.Canny(image, low, high)` makes them for 8-bit input with
//! the default 3×3 aperture, which is what A1111's ControlNet extension and diffusers' examples
//! run: Sobel gradients with the border replicated; on colour input, per pixel the channel with
//! the largest gradient (the first on ties); non-maximum suppression with OpenCV's integer
//! tangent test; hysteresis over the 8 neighbours. Integer arithmetic throughout, so the maps are
//! equal pixel for pixel (tests/preprocess.rs checks them against cv2's on photographs).

use image::GrayImage;

/// tan(22.5°) in OpenCV's fixed point (`CANNY_SHIFT` = 15).
const TG22: i64 = 13573;
const SHIFT: u32 = 15;

/// Gradient norm: OpenCV's default |dx| + |dy|, or dx² + dy² (`L2gradient`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// |dx| + |dy|.
    L1,
    /// dx² + dy².
    L2,
}

/// Edges (255) of `pixels` (`channels` interleaved 8-bit values per pixel, `width`×`height`)
/// between the thresholds `low` and `high` (swapped if given the other way round, as OpenCV).
pub fn canny(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    low: f64,
    high: f64,
    norm: Norm,
) -> GrayImage {
    let (low, high) = thresholds(low, high, norm);
    let (mag, dx, dy) = gradients(pixels, width, height, channels, norm);
    // Labels with a one-pixel frame: 1 = not an edge, 0 = weak candidate, 2 = edge.
    let (fw, fh) = (width + 2, height + 2);
    let mut label = vec![1u8; fw * fh];
    let at = |x: isize, y: isize| -> i64 {
        if x < 0 || y < 0 || x >= width as isize || y >= height as isize {
            0
        } else {
            mag[y as usize * width + x as usize]
        }
    };
    let mut stack = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (dx[i], dy[i]);
            let (xi, yi) = (x as isize, y as isize);
            let ax = xs.abs();
            let ay = ys.abs() << SHIFT;
            let tg22x = ax * TG22;
            let maximum = if ay < tg22x {
                m > at(xi - 1, yi) && m >= at(xi + 1, yi)
            } else if ay > tg22x + (ax << (SHIFT + 1)) {
                m > at(xi, yi - 1) && m >= at(xi, yi + 1)
            } else {
                let s = if (xs ^ ys) < 0 { -1 } else { 1 };
                m > at(xi - s, yi - 1) && m > at(xi + s, yi + 1)
            };
            if maximum {
                let f = (y + 1) * fw + x + 1;
                if m > high {
                    label[f] = 2;
                    stack.push(f);
                } else {
                    label[f] = 0;
                }
            }
        }
    }
    // The frame holds 1s, so growth never leaves the picture.
    while let Some(f) = stack.pop() {
        for n in [f - fw - 1, f - fw, f - fw + 1, f - 1, f + 1, f + fw - 1, f + fw, f + fw + 1] {
            if label[n] == 0 {
                label[n] = 2;
                stack.push(n);
            }
        }
    }
    GrayImage::from_fn(width as u32, height as u32, |x, y| {
        image::Luma([if label[(y as usize + 1) * fw + x as usize + 1] == 2 { 255 } else { 0 }])
    })
}

/// OpenCV's thresholds: ordered, squared for L2 (after capping at 32767), then floored.
fn thresholds(low: f64, high: f64, norm: Norm) -> (i64, i64) {
    let (mut low, mut high) = if low > high { (high, low) } else { (low, high) };
    if norm == Norm::L2 {
        low = low.min(32767.0);
        high = high.min(32767.0);
        if low > 0.0 {
            low *= low;
        }
        if high > 0.0 {
            high *= high;
        }
    }
    (low.floor() as i64, high.floor() as i64)
}

/// Sobel dx, dy (border replicated) and the norm, keeping per pixel the channel whose norm is
/// largest (the first on ties).
fn gradients(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    norm: Norm,
) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let n = width * height;
    let (mut mag, mut dx, mut dy) = (vec![-1i64; n], vec![0i64; n], vec![0i64; n]);
    let px = |x: isize, y: isize, c: usize| -> i64 {
        let x = x.clamp(0, width as isize - 1) as usize;
        let y = y.clamp(0, height as isize - 1) as usize;
        i64::from(pixels[(y * width + x) * channels + c])
    };
    for y in 0..height as isize {
        for x in 0..width as isize {
            let i = y as usize * width + x as usize;
            for c in 0..channels {
                let gx = (px(x + 1, y - 1, c) - px(x - 1, y - 1, c))
                    + 2 * (px(x + 1, y, c) - px(x - 1, y, c))
                    + (px(x + 1, y + 1, c) - px(x - 1, y + 1, c));
                let gy = (px(x - 1, y + 1, c) + 2 * px(x, y + 1, c) + px(x + 1, y + 1, c))
                    - (px(x - 1, y - 1, c) + 2 * px(x, y - 1, c) + px(x + 1, y - 1, c));
                let m = match norm {
                    Norm::L1 => gx.abs() + gy.abs(),
                    Norm::L2 => gx * gx + gy * gy,
                };
                if m > mag[i] {
                    (mag[i], dx[i], dy[i]) = (m, gx, gy);
                }
            }
        }
    }
    (mag, dx, dy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_gives_one_line_and_flat_gives_none() {
        let (w, h) = (12, 8);
        let step: Vec<u8> = (0..w * h).map(|i| if i % w < 6 { 0 } else { 200 }).collect();
        let edges = canny(&step, w, h, 1, 100.0, 200.0, Norm::L1);
        for y in 0..h as u32 {
            let row: Vec<u8> = (0..w as u32).map(|x| edges.get_pixel(x, y).0[0]).collect();
            // The gradient peaks on both sides of the step; `>` left and `>=` right keeps one.
            assert_eq!(row.iter().filter(|&&v| v == 255).count(), 1, "row {y}: {row:?}");
        }
        let flat = vec![90u8; w * h];
        assert!(canny(&flat, w, h, 1, 0.0, 0.0, Norm::L1).pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn thresholds_follow_opencv() {
        assert_eq!(thresholds(200.0, 100.5, Norm::L1), (100, 200));
        assert_eq!(thresholds(10.5, 40000.0, Norm::L2), (110, 32767 * 32767));
    }
}
