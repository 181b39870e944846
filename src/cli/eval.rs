//! `easel eval`: FID, KID, IS, PSNR and SSIM of generated folders against a reference folder (or
//! saved reference statistics), as a table per set and optionally JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use easel::engine::device::DeviceChoice;
use easel::metrics::cache::FeatureCache;
use easel::metrics::evaluate::count_pictures;
use easel::metrics::fid::Statistics;
use easel::metrics::inception::WEIGHTS_FILE;
use easel::metrics::{evaluate, extract_folder, EvalOptions, Extractor, Reference, ResizeMode, SetReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Args)]
pub struct EvalArgs {
    /// Folder of reference pictures (real photographs, the artist's own work…).
    #[arg(long, required_unless_present = "reference_stats")]
    reference: Option<PathBuf>,
    /// Reference statistics (.npz with mu and sigma, as pytorch-fid --save-stats writes) instead of a folder.
    #[arg(long)]
    reference_stats: Option<PathBuf>,
    /// Folder of generated pictures; repeat to compare several configurations.
    #[arg(long, required = true)]
    generated: Vec<PathBuf>,
    /// FID Inception weights (pytorch-fid's .pth, or .safetensors).
    #[arg(long, default_value_os_t = Path::new("models").join(WEIGHTS_FILE))]
    inception: PathBuf,
    /// pytorch-fid or tf1 (torch-fidelity's preprocessing).
    #[arg(long, default_value = "pytorch-fid", value_parser = super::errors::value::<ResizeMode>)]
    resize: ResizeMode,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Save the reference folder's statistics as .npz for later runs.
    #[arg(long)]
    save_reference_stats: Option<PathBuf>,
    /// KID subsets.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// KID subset size (clipped to the smaller set).
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// Inception Score splits.
    #[arg(long, default_value_t = 10)]
    is_splits: usize,
    /// Seed for KID subsets and the IS shuffle (torch-fidelity's default is 2020).
    #[arg(long, default_value_t = 2020)]
    seed: u32,
    /// Do not read or write the per-picture feature cache.
    #[arg(long)]
    no_cache: bool,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_parser = super::errors::value::<DeviceChoice>)]
    device: DeviceChoice,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let mode = args.resize;
    for dir in args.reference.iter().chain(&args.generated) {
        if !dir.is_dir() {
            return Err(easel::Error::not_found("picture folder", dir).into());
        }
    }
    // Statistics first: a damaged file should not cost loading the network and reading folders.
    let stats = match &args.reference_stats {
        Some(p) => Some(Statistics::load_npz(p)?),
        None => None,
    };
    let device = args.device.open()?;
    let cache_dir = if args.no_cache { None } else { FeatureCache::default_dir() };
    let extractor = Extractor::new(&args.inception, &device, mode, cache_dir)?;
    let options = EvalOptions {
        kid_subsets: args.kid_subsets,
        kid_subset_size: args.kid_subset_size,
        is_splits: args.is_splits,
        seed: args.seed,
    };

    let mut total = args.generated.iter().map(|d| count_pictures(d)).sum::<easel::Result<usize>>()?;
    if let Some(r) = &args.reference {
        total += count_pictures(r)?;
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("features [{bar:30}] {pos}/{len} pictures  {per_sec}  eta {eta}")
            .map_err(|e| anyhow::anyhow!(e))?
            .progress_chars("=> "),
    );
    let mut tick = || bar.inc(1);
    let reference_set = match &args.reference {
        Some(dir) => Some(extract_folder(&extractor, dir, &mut tick)?),
        None => None,
    };
    if let (Some(path), Some(set)) = (&args.save_reference_stats, &reference_set) {
        Statistics::from_features(&set.pool)?.save_npz(path)?;
    }
    let mut reports = Vec::new();
    for dir in &args.generated {
        let set = extract_folder(&extractor, dir, &mut tick)?;
        let reference = match (&stats, &reference_set) {
            (Some(s), _) => Reference::Statistics(s),
            (None, Some(r)) => Reference::Pictures(r),
            (None, None) => unreachable!("clap requires --reference or --reference-stats"),
        };
        reports.push(evaluate(&reference, &set, &options)?);
    }
    bar.finish_and_clear();

    if let Some(r) = &reference_set {
        for (path, why) in &r.unreadable {
            eprintln!("skipped unreadable reference {}: {why}", path.display());
        }
    }
    print_table(&reports);
    if let Some(path) = &args.json {
        let report = json!({
            "reference": args.reference.as_ref().map(|p| p.display().to_string())
                .or_else(|| args.reference_stats.as_ref().map(|p| p.display().to_string())),
            "resize": mode,
            "inception": args.inception.display().to_string(),
            "sets": reports,
            "version": easel::version(),
        });
        easel::files::write_atomically(path, serde_json::to_string_pretty(&report)?.as_bytes(), true)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(reports: &[SetReport]) {
    let fmt = |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |x| format!("{x:.digits$}"));
    println!(
        "{:<28} {:>6} {:>10} {:>22} {:>18} {:>8} {:>7} {:>6}",
        "set", "count", "FID", "KID", "IS", "PSNR", "SSIM", "pairs"
    );
    for r in reports {
        let kid = r.kid.map_or("—".to_string(), |k| format!("{:.5} ± {:.5}", k.mean, k.std));
        let is = r.inception_score.map_or("—".to_string(), |s| format!("{:.3} ± {:.3}", s.mean, s.std));
        let name = Path::new(&r.name).file_name().map_or(r.name.clone(), |n| n.to_string_lossy().to_string());
        println!(
            "{:<28} {:>6} {:>10} {:>22} {:>18} {:>8} {:>7} {:>6}",
            name,
            r.count,
            fmt(r.fid, 4),
            kid,
            is,
            fmt(r.psnr, 2),
            fmt(r.ssim, 4),
            r.pairs
        );
    }
    for r in reports {
        for w in &r.warnings {
            eprintln!("note ({}): {w}", r.name);
        }
        for u in &r.unreadable {
            eprintln!("skipped unreadable {u}");
        }
        for p in &r.skipped_pairs {
            eprintln!("skipped pair for PSNR/SSIM ({}) {p}", r.name);
        }
        if !r.unpaired.is_empty() {
            eprintln!(
                "{}: {} picture(s) without a same-named reference for PSNR/SSIM",
                r.name,
                r.unpaired.len()
            );
        }
    }
}
