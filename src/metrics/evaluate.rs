//! Evaluating folders of pictures: Inception features for every readable picture (cached), then
//! FID, KID and IS against the reference set, and PSNR/SSIM over pictures paired by file name.
//! Unreadable files are listed and skipped, never fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::cache::{file_hash, CachedFeatures, FeatureCache};
use super::fid::{frechet_distance, Statistics};
use super::images::{list_pictures, read_rgb};
use super::inception::FidInception;
use super::inception_score::{inception_score, InceptionScore};
use super::kid::{kernel_inception_distance, Kid};
use super::pixel::{psnr, ssim};
use super::resize::{prepare, ResizeMode, SIZE};
use crate::error::{Error, Result};

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
                let hash = file_hash(weights)
                    .map_err(|e| Error::io("cannot read the Inception weights", e, weights))?;
                Some(FeatureCache::new(dir, &hash, mode))
            }
            None => None,
        };
        Ok(Self { net, mode, cache })
    }

    /// Features of one picture file.
    pub fn features(&self, path: &Path) -> Result<CachedFeatures> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read the picture", e, path))?;
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&bytes, DIMS)) {
            return Ok(hit);
        }
        let image = read_rgb(path)?;
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
#[derive(Clone, Debug, serde::Serialize)]
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
    /// Generated pictures with no same-named reference, or of another size.
    pub unpaired: Vec<String>,
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
        fid: None,
        kid: None,
        inception_score: None,
        psnr: None,
        ssim: None,
        pairs: 0,
        unpaired: vec![],
        unreadable: generated.unreadable.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect(),
        warnings: vec![],
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
                report.kid = Some(kernel_inception_distance(
                    &r.pool,
                    &generated.pool,
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
        pair_metrics(r, generated, &mut report)?;
    }
    report.warnings = warnings;
    Ok(report)
}

/// PSNR and SSIM over pictures with the same file name (extension aside: `a.png` pairs with
/// `a.jpg`) in both folders.
fn pair_metrics(reference: &SetFeatures, generated: &SetFeatures, report: &mut SetReport) -> Result<()> {
    let by_name: BTreeMap<String, &PathBuf> = reference
        .paths
        .iter()
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().to_string(), p)))
        .collect();
    let (mut psnr_sum, mut ssim_sum, mut pairs) = (0.0, 0.0, 0usize);
    for path in &generated.paths {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let stem = path.file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let Some(ref_path) = by_name.get(&stem) else {
            report.unpaired.push(format!("{name}: no reference of that name"));
            continue;
        };
        let (a, b) = (read_rgb(ref_path)?, read_rgb(path)?);
        if a.dimensions() != b.dimensions() {
            report.unpaired.push(format!(
                "{name}: {}×{} against a {}×{} reference",
                b.width(),
                b.height(),
                a.width(),
                a.height()
            ));
            continue;
        }
        psnr_sum += psnr(&a, &b)?;
        ssim_sum += ssim(&a, &b)?;
        pairs += 1;
    }
    if pairs > 0 {
        report.psnr = Some(psnr_sum / pairs as f64);
        report.ssim = Some(ssim_sum / pairs as f64);
    }
    report.pairs = pairs;
    Ok(())
}
