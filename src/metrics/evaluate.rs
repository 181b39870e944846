//! Evaluating folders of pictures: Inception features for every readable picture (cached), then
//! FID, KID and IS against the reference set, and PSNR/SSIM over pictures paired by file name.
//! Unreadable files (including those too large to read, see [`super::images`]) are listed and
//! skipped, never fatal; so are pairs PSNR/SSIM cannot compare (different sizes, too small), each
//! with its reason, while the other pairs are still measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::cache::{CachedFeatures, FeatureCache};
use super::fid::{frechet_distance, Statistics};
use super::images::{decode_rgb, list_pictures, read_picture_bytes, read_rgb};
use super::inception::FidInception;
use super::inception_score::{inception_score, InceptionScore};
use super::kid::{kernel_inception_distance, Kid};
use super::pixel::{psnr, ssim};
use super::resize::{prepare, ResizeMode, SIZE};
use crate::error::{Error, Result};
use crate::files::sha256_hex;

/// Feature dimensions: pool features and logits.
const DIMS: (usize, usize) = (2048, 1008);

/// The network plus preprocessing and cache.
pub struct Extractor {
    net: FidInception,
    mode: ResizeMode,
    cache: Option<FeatureCache>,
}

impl Extractor {
    /// Loads the weights; `cache_dir` enables the on-disk feature cache.
    pub fn new(
        weights: &Path,
        device: &Device,
        mode: ResizeMode,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let net = FidInception::load(weights, device)?;
        let cache = match cache_dir {
            Some(dir) => {
                let hash = sha256_hex(weights)
                    .map_err(|e| Error::io("cannot read the Inception weights", e, weights))?;
                Some(FeatureCache::new(dir, &hash, mode))
            }
            None => None,
        };
        Ok(Self { net, mode, cache })
    }

    /// Features of one picture file. Files and pictures over the size limits are refused before
    /// they are read or decoded.
    pub fn features(&self, path: &Path) -> Result<CachedFeatures> {
        let bytes = read_picture_bytes(path)?;
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&bytes, DIMS)) {
            return Ok(hit);
        }
        let image = decode_rgb(&bytes, path)?;
        let input = Tensor::from_vec(prepare(&image, self.mode), (1, 3, SIZE, SIZE), self.net.device())?;
        let out = self.net.forward(&input)?;
        let features = CachedFeatures {
            pool: out.pool.flatten_all()?.to_vec1()?,
            logits: out.logits_unbiased.flatten_all()?.to_vec1()?,
        };
        if let Some(cache) = &self.cache {
            cache.put(&bytes, &features);
        }
        Ok(features)
    }
}

/// Features of every readable picture in a folder.
pub struct SetFeatures {
    /// The folder.
    pub dir: PathBuf,
    /// Readable pictures, in file-name order.
    pub paths: Vec<PathBuf>,
    /// Their pool features.
    pub pool: Vec<Vec<f32>>,
    /// Their unbiased logits.
    pub logits: Vec<Vec<f32>>,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Extracts a folder's features; `on_picture` is called after each file.
pub fn extract_folder(
    extractor: &Extractor,
    dir: &Path,
    on_picture: &mut dyn FnMut(),
) -> Result<SetFeatures> {
    let mut set = SetFeatures {
        dir: dir.to_path_buf(),
        paths: vec![],
        pool: vec![],
        logits: vec![],
        unreadable: vec![],
    };
    for path in list_pictures(dir)? {
        match extractor.features(&path) {
            Ok(f) => {
                set.paths.push(path);
                set.pool.push(f.pool);
                set.logits.push(f.logits);
            }
            Err(e @ (Error::BadFile { .. } | Error::Io { .. })) => set.unreadable.push((path, e.to_string())),
            Err(e) => return Err(e),
        }
        on_picture();
    }
    Ok(set)
}

/// The pictures in `dir`, for callers that show progress.
pub fn count_pictures(dir: &Path) -> Result<usize> {
    Ok(list_pictures(dir)?.len())
}

/// Seeds and sizes of the sampled metrics, torch-fidelity's defaults.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// KID subsets.
    pub kid_subsets: usize,
    /// KID subset size (clipped to the smaller set).
    pub kid_subset_size: usize,
    /// Inception Score splits.
    pub is_splits: usize,
    /// Seed of NumPy's `RandomState` for KID and IS.
    pub seed: u32,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { kid_subsets: 100, kid_subset_size: 1000, is_splits: 10, seed: 2020 }
    }
}

/// The numbers for one generated set against the reference.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SetReport {
    /// The generated folder.
    pub name: String,
    /// Readable pictures in it.
    pub count: usize,
    /// FID against the reference.
    pub fid: Option<f64>,
    /// KID against the reference (needs reference pictures, not just statistics).
    pub kid: Option<Kid>,
    /// Inception Score of the generated set.
    pub inception_score: Option<InceptionScore>,
    /// Mean PSNR over pairs (dB).
    pub psnr: Option<f64>,
    /// Mean SSIM over pairs.
    pub ssim: Option<f64>,
    /// Pictures paired with a reference of the same file name.
    pub pairs: usize,
    /// Generated pictures with no same-named reference.
    pub unpaired: Vec<String>,
    /// Pairs left out of PSNR and SSIM, each as `name: reason` (different sizes, too small for
    /// SSIM's window, a side unreadable); the other pairs are still measured.
    pub skipped_pairs: Vec<String>,
    /// Files that could not be read.
    pub unreadable: Vec<String>,
    /// What the user should know about these numbers.
    pub warnings: Vec<String>,
}

/// The reference side: pictures (for KID and pairs) or only saved statistics.
pub enum Reference<'a> {
    /// Features of a reference folder.
    Pictures(&'a SetFeatures),
    /// Statistics from an `.npz` (FID only).
    Statistics(&'a Statistics),
}

/// Scores `generated` against `reference`.
pub fn evaluate(reference: &Reference, generated: &SetFeatures, options: &EvalOptions) -> Result<SetReport> {
    let mut warnings = Vec::new();
    let n = generated.pool.len();
    let mut report = SetReport {
        name: generated.dir.display().to_string(),
        count: n,
        unreadable: generated.unreadable.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect(),
        ..Default::default()
    };
    if n < 2 {
        warnings.push(format!("only {n} readable picture(s): FID, KID and IS need at least 2"));
    } else {
        let gen_stats = Statistics::from_features(&generated.pool)?;
        let ref_stats = match reference {
            Reference::Pictures(r) if r.pool.len() >= 2 => Some(Statistics::from_features(&r.pool)?),
            Reference::Pictures(_) => None,
            Reference::Statistics(s) => Some((*s).clone()),
        };
        if let Some(rs) = ref_stats {
            report.fid = Some(frechet_distance(&rs, &gen_stats)?);
            let smallest = if rs.count == 0 { n } else { n.min(rs.count) };
            if smallest <= DIMS.0 {
                warnings.push(format!(
                    "FID from {smallest} pictures: with fewer than {} the covariance is rank-deficient and FID is \
                     biased upwards; compare only sets of equal size, and prefer KID for small sets",
                    DIMS.0 + 1
                ));
            }
        }
        if let Reference::Pictures(r) = reference {
            if r.pool.len() >= 2 {
                // torch-fidelity's order: the generated set's subset is drawn first, then the
                // references' (with a subset smaller than the sets, the order changes the value).
                report.kid = Some(kernel_inception_distance(
                    &generated.pool,
                    &r.pool,
                    options.kid_subsets,
                    options.kid_subset_size,
                    options.seed,
                )?);
            }
        }
        if n >= options.is_splits {
            report.inception_score =
                Some(inception_score(&generated.logits, options.is_splits, options.seed)?);
        } else {
            warnings
                .push(format!("the Inception Score needs at least {} pictures; got {n}", options.is_splits));
        }
    }
    if let Reference::Pictures(r) = reference {
        pair_metrics(r, generated, &mut report);
    }
    report.warnings = warnings;
    Ok(report)
}

/// PSNR and SSIM over pictures with the same file name (extension aside: `a.png` pairs with
/// `a.jpg`) in both folders. A pair that cannot be compared is listed in `skipped_pairs` with the
/// reason and left out of both means.
fn pair_metrics(reference: &SetFeatures, generated: &SetFeatures, report: &mut SetReport) {
    let stem = |p: &Path| p.file_stem().map(|n| n.to_string_lossy().to_string());
    let by_name: BTreeMap<String, &PathBuf> =
        reference.paths.iter().filter_map(|p| Some((stem(p)?, p))).collect();
    let unreadable: BTreeMap<String, &PathBuf> =
        reference.unreadable.iter().filter_map(|(p, _)| Some((stem(p)?, p))).collect();
    let (mut psnr_sum, mut ssim_sum, mut pairs) = (0.0, 0.0, 0usize);
    for path in &generated.paths {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let key = stem(path).unwrap_or_default();
        let Some(ref_path) = by_name.get(&key) else {
            match unreadable.get(&key) {
                Some(r) => report.skipped_pairs.push(format!(
                    "{name}: its reference {} could not be read (listed with the unreadable reference pictures)",
                    r.display()
                )),
                None => report.unpaired.push(format!("{name}: no reference of that name")),
            }
            continue;
        };
        match compare_pair(ref_path, path) {
            Ok((p, s)) => {
                psnr_sum += p;
                ssim_sum += s;
                pairs += 1;
            }
            Err(why) => report.skipped_pairs.push(format!("{name}: {why}")),
        }
    }
    if pairs > 0 {
        report.psnr = Some(psnr_sum / pairs as f64);
        report.ssim = Some(ssim_sum / pairs as f64);
    }
    report.pairs = pairs;
}

/// PSNR and SSIM of one pair, or why the pair cannot be compared.
fn compare_pair(ref_path: &Path, path: &Path) -> std::result::Result<(f64, f64), String> {
    let a = read_rgb(ref_path).map_err(|e| format!("its reference is unreadable now ({e})"))?;
    let b = read_rgb(path).map_err(|e| e.to_string())?;
    if a.dimensions() != b.dimensions() {
        return Err(format!(
            "{}×{} against a {}×{} reference; PSNR and SSIM compare pictures of the same size \
             (generate at the reference's size)",
            b.width(),
            b.height(),
            a.width(),
            a.height()
        ));
    }
    let psnr = psnr(&a, &b).map_err(|e| e.to_string())?;
    let ssim = ssim(&a, &b).map_err(|e| e.to_string())?;
    Ok((psnr, ssim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed;
        RgbImage::from_fn(w, h, |_, _| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            image::Rgb([(s >> 16) as u8, (s >> 8) as u8, (s >> 24) as u8])
        })
    }

    fn set(dir: &Path, pictures: &[(&str, RgbImage)], broken: &[&str]) -> SetFeatures {
        std::fs::create_dir_all(dir).expect("folder");
        let mut paths = vec![];
        for (name, img) in pictures {
            let path = dir.join(name);
            img.save(&path).expect("saved");
            paths.push(path);
        }
        let unreadable = broken
            .iter()
            .map(|name| {
                let path = dir.join(name);
                std::fs::write(&path, b"not a picture").expect("written");
                (path, "cannot read this picture".to_string())
            })
            .collect();
        SetFeatures { dir: dir.to_path_buf(), paths, pool: vec![], logits: vec![], unreadable }
    }

    #[test]
    fn a_pair_that_cannot_be_compared_is_listed_and_the_rest_measured() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good: Vec<(String, RgbImage, RgbImage)> =
            (0..3).map(|i| (format!("good_{i}.png"), noise(24, 20, i), noise(24, 20, 10 + i))).collect();
        let mut refs: Vec<(&str, RgbImage)> = good.iter().map(|(n, a, _)| (n.as_str(), a.clone())).collect();
        let mut gens: Vec<(&str, RgbImage)> = good.iter().map(|(n, _, b)| (n.as_str(), b.clone())).collect();
        refs.push(("tiny.png", noise(4, 4, 1)));
        gens.push(("tiny.png", noise(4, 4, 2)));
        refs.push(("sized.png", noise(24, 20, 3)));
        gens.push(("sized.png", noise(20, 24, 4)));
        gens.push(("lost.png", noise(24, 20, 5)));
        gens.push(("alone.png", noise(24, 20, 6)));
        let reference = set(&dir.path().join("ref"), &refs, &["lost.png"]);
        let generated = set(&dir.path().join("gen"), &gens, &[]);
        let mut report = SetReport::default();
        pair_metrics(&reference, &generated, &mut report);

        assert_eq!(report.pairs, 3);
        let expected_ssim: f64 = good.iter().map(|(_, a, b)| ssim(a, b).expect("ssim")).sum::<f64>() / 3.0;
        assert_eq!(report.ssim, Some(expected_ssim));
        let expected_psnr: f64 = good.iter().map(|(_, a, b)| psnr(a, b).expect("psnr")).sum::<f64>() / 3.0;
        assert_eq!(report.psnr, Some(expected_psnr));
        let skipped = report.skipped_pairs.join("\n");
        assert_eq!(report.skipped_pairs.len(), 3, "{skipped}");
        assert!(skipped.contains("tiny.png: SSIM needs pictures of at least 6×6"), "{skipped}");
        assert!(skipped.contains("sized.png: 20×24 against a 24×20 reference"), "{skipped}");
        assert!(skipped.contains("lost.png: its reference"), "{skipped}");
        assert_eq!(report.unpaired, vec!["alone.png: no reference of that name".to_string()]);
    }

    #[test]
    fn a_picture_that_became_unreadable_skips_only_its_pair() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reference =
            set(&dir.path().join("ref"), &[("a.png", noise(16, 16, 1)), ("b.png", noise(16, 16, 2))], &[]);
        let generated =
            set(&dir.path().join("gen"), &[("a.png", noise(16, 16, 3)), ("b.png", noise(16, 16, 4))], &[]);
        std::fs::write(dir.path().join("gen").join("b.png"), b"truncated").expect("overwritten");
        let mut report = SetReport::default();
        pair_metrics(&reference, &generated, &mut report);
        assert_eq!(report.pairs, 1);
        assert!(report.ssim.is_some());
        assert_eq!(report.skipped_pairs.len(), 1);
        assert!(
            report.skipped_pairs[0].starts_with("b.png: cannot read this picture"),
            "{:?}",
            report.skipped_pairs
        );
    }
}
