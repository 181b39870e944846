//! Getting a picture into the Inception network the way each reference tool does:
//! pytorch-fid takes RGB in [0, 1], resizes bilinearly to 299×299 with PyTorch's half-pixel rule
//! (`align_corners=False`, no antialiasing) and scales to [-1, 1]; torch-fidelity resizes the 0–255
//! values with TensorFlow 1's rule (no half-pixel offset) and maps them with (x − 128)/128.

use image::RgbImage;

/// Inception's input size.
pub const SIZE: usize = 299;

/// Which tool's preprocessing to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// pytorch-fid 0.3.0 (the default: the most cited FID).
    PytorchFid,
    /// torch-fidelity 0.4.0 (TensorFlow 1 compatible).
    Tf1,
}

impl std::str::FromStr for ResizeMode {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "pytorch-fid" => Ok(ResizeMode::PytorchFid),
            "tf1" => Ok(ResizeMode::Tf1),
            other => Err(crate::error::Error::setting(
                crate::error::Setting::Resize,
                format!("{other:?} is unknown; choose pytorch-fid or tf1"),
            )),
        }
    }
}

/// The picture as Inception input: CHW f32 values in [-1, 1], 3×299×299.
pub fn prepare(image: &RgbImage, mode: ResizeMode) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let raw = image.as_raw();
    let channel = |c: usize| -> Vec<f32> {
        (0..h * w)
            .map(|i| {
                let v = raw[i * 3 + c] as f32;
                match mode {
                    ResizeMode::PytorchFid => v / 255.0,
                    ResizeMode::Tf1 => v,
                }
            })
            .collect()
    };
    let mut out = Vec::with_capacity(3 * SIZE * SIZE);
    for c in 0..3 {
        let plane = channel(c);
        let resized = match mode {
            ResizeMode::PytorchFid => bilinear(&plane, h, w, SIZE, SIZE, torch_source),
            ResizeMode::Tf1 => bilinear(&plane, h, w, SIZE, SIZE, tf1_source),
        };
        out.extend(resized.into_iter().map(|v| match mode {
            ResizeMode::PytorchFid => 2.0 * v - 1.0,
            ResizeMode::Tf1 => (v - 128.0) / 128.0,
        }));
    }
    out
}

/// PyTorch `align_corners=False`: half-pixel centres, clamped at 0.
fn torch_source(dst: usize, scale: f32) -> f32 {
    (scale * (dst as f32 + 0.5) - 0.5).max(0.0)
}

/// TensorFlow 1: no half-pixel offset.
fn tf1_source(dst: usize, scale: f32) -> f32 {
    dst as f32 * scale
}

/// Separable bilinear resampling of one plane with the given source-coordinate rule.
fn bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize, rule: fn(usize, f32) -> f32) -> Vec<f32> {
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let s = rule(o, scale);
                let lo = (s as usize).min(n_in - 1);
                let hi = (lo + 1).min(n_in - 1);
                (lo, hi, s - lo as f32)
            })
            .collect()
    };
    let ys = taps(h, oh);
    let xs = taps(w, ow);
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let p00 = src[y0 * w + x0];
            let p01 = src[y0 * w + x1];
            let p10 = src[y1 * w + x0];
            let p11 = src[y1 * w + x1];
            let top = p00 + (p01 - p00) * fx;
            let bottom = p10 + (p11 - p10) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_for_both_rules() {
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(bilinear(&src, 4, 4, 4, 4, torch_source), src);
        assert_eq!(bilinear(&src, 4, 4, 4, 4, tf1_source), src);
    }

    #[test]
    fn upsampling_two_pixels_follows_each_rule() {
        // [0, 10] to 4 pixels. PyTorch: sources −0.25→0, 0.25, 0.75, 1.25→clamped taps.
        let torch = bilinear(&[0.0, 10.0], 1, 2, 1, 4, torch_source);
        assert_eq!(torch, vec![0.0, 2.5, 7.5, 10.0]);
        // TF1: sources 0, 0.5, 1, 1.5.
        let tf = bilinear(&[0.0, 10.0], 1, 2, 1, 4, tf1_source);
        assert_eq!(tf, vec![0.0, 5.0, 10.0, 10.0]);
    }
}
