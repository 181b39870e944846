//! `easel generate`: one request from flags, pictures written as PNGs with their parameters.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use easel::engine::device::{DeviceChoice, Precision};
use easel::engine::prompt::Emphasis;
use easel::engine::rng::NoiseSource;
use easel::engine::samplers::schedule::Spacing;
use easel::engine::samplers::{Prediction, SamplerImpl};
use easel::engine::{GenerationInputs, GenerationRequest, SamplerKind, StableDiffusion};
use easel::export::png::save_png;
use easel::Error;
use image::imageops::FilterType;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct GenerateArgs {
    /// A diffusers folder, a .safetensors/.ckpt checkpoint, or a hub id pulled earlier.
    #[arg(long)]
    model: String,
    /// What to draw. A1111's syntax is read: (word:1.2) emphasis, BREAK, [from:to:when] prompt
    /// editing, [a|b] alternation, AND, embeddings by file name and <lora:name:w> tags.
    #[arg(long, required_unless_present = "settings_from")]
    prompt: Option<String>,
    /// Start from the settings stored in this PNG (Easel's, A1111's or ComfyUI's metadata): prompt,
    /// sampler, seed, size, clip skip, noise source…; flags given on the command line override them.
    #[arg(long, value_name = "PNG")]
    settings_from: Option<PathBuf>,
    /// Settings to start from: a shipped preset (`easel presets` lists them), a user preset, or a JSON file.
    /// Flags given on the command line override it.
    #[arg(long)]
    preset: Option<String>,
    /// What to steer away from.
    #[arg(long)]
    negative: Option<String>,
    /// ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras or lcm.
    #[arg(long, value_parser = super::errors::value::<SamplerKind>)]
    sampler: Option<SamplerKind>,
    /// Whose sampler implementation runs: diffusers (Easel's reference) or a1111 (k-diffusion's
    /// schedules and A1111's DDIM and LCM, to reproduce A1111's pictures).
    #[arg(long, value_parser = super::errors::value::<SamplerImpl>)]
    sampler_impl: Option<SamplerImpl>,
    /// How (word:1.2) weights act: original (A1111's default), no-norm, ignore, none (brackets are
    /// plain text) or comfy (ComfyUI's weighting).
    #[arg(long, value_parser = super::errors::value::<Emphasis>)]
    emphasis: Option<Emphasis>,
    /// A1111's clip skip for SD 1.x models: 1 reads the text encoder's last layer, 2 the one before
    /// (anime models); SD 2.x and SDXL read their own fixed layers.
    #[arg(long)]
    clip_skip: Option<usize>,
    /// Which generator draws the noise: cpu (PyTorch's CPU generator, as diffusers) or gpu (the
    /// numbers an NVIDIA GPU draws, A1111's default, on any machine).
    #[arg(long, value_parser = super::errors::value::<NoiseSource>)]
    rng: Option<NoiseSource>,
    /// A1111's eta noise seed delta (ENSD): ancestral steps draw from the seed plus this.
    #[arg(long)]
    ensd: Option<u64>,
    /// Folder of textual-inversion embeddings (.pt, .bin, .safetensors) the prompts name by file
    /// name (default: models/embeddings).
    #[arg(long)]
    embeddings_dir: Option<PathBuf>,
    /// Timestep spacing instead of the model's scheduler config: leading, linspace or trailing
    /// (SDXL-Lightning, Turbo and Hyper-SD publish trailing).
    #[arg(long, value_parser = super::errors::value::<Spacing>)]
    spacing: Option<Spacing>,
    /// Denoising steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    #[arg(long)]
    cfg: Option<f64>,
    /// Seed of the first picture (picture k of a batch uses seed + k); random when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// Width in pixels, a multiple of 8; without it an init image gives its own, or the model's
    /// family its native size (SDXL 1024).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels, a multiple of 8; without it an init image gives its own, or the model's
    /// family its native size (SDXL 1024).
    #[arg(long)]
    height: Option<usize>,
    /// SDXL: the size WIDTHxHEIGHT the model is told the source picture had (default: the
    /// picture's own; larger values steer away from upscaled-looking pictures).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    original_size: Option<[usize; 2]>,
    /// SDXL: the crop TOP,LEFT the model is told the picture is (default 0,0).
    #[arg(long, value_name = "TOP,LEFT", value_parser = parse_pair)]
    crop_top_left: Option<[usize; 2]>,
    /// SDXL: the size WIDTHxHEIGHT the model is told to aim for (default: the picture's own).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    target_size: Option<[usize; 2]>,
    /// A safetensors file with an f32 tensor `noise` [1, 4, H/8, W/8] used instead of seeded noise.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Start from this picture (img2img).
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// How far to move from the init image, (0, 1].
    #[arg(long)]
    strength: Option<f64>,
    /// Inpainting mask: white is repainted, black kept.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Pictures to make.
    #[arg(long)]
    batch: Option<usize>,
    /// With --mask: put the init image's own pixels back outside the mask after decoding, as A1111
    /// does (diffusers, and Easel by default, keep the decoded picture everywhere).
    #[arg(long, requires = "mask")]
    keep_unmasked: bool,
    /// A standalone VAE to decode with (a .safetensors/.pt file or a diffusers VAE folder), e.g.
    /// sdxl-vae-fp16-fix for SDXL in f16, or vae-ft-mse-840000 for SD 1.5.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// A LoRA to merge: FILE[:WEIGHT[:TE_WEIGHT]] (weights default to 1; repeat for a stack).
    #[arg(long = "lora", value_name = "FILE[:W[:TE]]")]
    loras: Vec<String>,
    /// Where `<lora:name:weight>` prompt tags are looked up (default: models/lora).
    #[arg(long)]
    lora_dir: Option<PathBuf>,
    /// A ControlNet unit: model=PATH,image=PATH[,weight=W][,start=S][,end=E][,preprocess=P]
    /// [,mode=M][,resize=R][,low=L,high=H|threshold=T|factor=F][,save=MAP.png]. Preprocessors:
    /// none, canny (low/high, default 100/200), scribble, lineart (threshold), invert, tile
    /// (factor), inpaint (with --mask); modes: balanced, prompt, control, guess; resize: just,
    /// crop, fill. Repeat for several units; with --settings-from the k-th flag completes the
    /// picture's k-th unit.
    #[arg(long = "control", value_name = "KEY=VALUE,…")]
    controls: Vec<String>,
    /// Where ControlNets named without a path (and in imported pictures) are found
    /// (default: models/controlnet).
    #[arg(long)]
    controlnet_dir: Option<PathBuf>,
    /// auto, cpu, cuda or metal.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_parser = super::errors::value::<DeviceChoice>)]
    device: DeviceChoice,
    /// f32, f16 or bf16.
    #[arg(long, default_value_t = Precision::F32, value_parser = super::errors::value::<Precision>)]
    dtype: Precision,
    /// What the model predicts, when its files do not say it right: epsilon or v_prediction.
    /// (SD 2.x single files are taken as the 768 v-prediction models; the 512 base ones need epsilon.)
    #[arg(long, value_parser = super::errors::value::<Prediction>)]
    prediction: Option<Prediction>,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    /// Output PNG; with --batch N, pictures are numbered OUT-1.png … OUT-N.png.
    #[arg(short, long)]
    output: PathBuf,
}

/// The settings whose defaults come from `GenerationRequest::default()`, so `--help` states the
/// same values the engine uses.
pub fn with_defaults(command: clap::Command) -> clap::Command {
    let d = GenerationRequest::default();
    let defaults = [
        ("sampler", d.sampler.to_string()),
        ("steps", d.steps.to_string()),
        ("cfg", d.cfg_scale.to_string()),
        ("width", d.width.to_string()),
        ("height", d.height.to_string()),
        ("strength", d.strength.to_string()),
        ("batch", d.batch.to_string()),
    ];
    defaults.into_iter().fold(command, |command, (name, value)| {
        command.mut_arg(name, |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [default: {value}]"))
        })
    })
}

/// `models/embeddings` when it exists, as A1111 reads its `embeddings` folder without being told.
fn default_embeddings_dir() -> Option<PathBuf> {
    let dir = PathBuf::from("models/embeddings");
    dir.is_dir().then_some(dir)
}

/// `WIDTHxHEIGHT` (also with `×` or `X`), each a positive number of pixels.
fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("{s:?} is not a size; write WIDTHxHEIGHT, e.g. 1024x1024"))?;
    match parse_pair(&format!("{w},{h}"))? {
        [0, _] | [_, 0] => Err(format!("{s:?} has a zero side")),
        size => Ok(size),
    }
}

/// `A,B`, two whole numbers.
fn parse_pair(s: &str) -> Result<[usize; 2], String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("{s:?} is not two numbers A,B"))?;
    let num =
        |v: &str| v.trim().parse::<usize>().map_err(|_| format!("{v:?} in {s:?} is not a whole number"));
    Ok([num(a)?, num(b)?])
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let preset = match &args.preset {
        Some(spec) => easel::presets::load(spec)?,
        None => easel::presets::Preset::default(),
    };
    // Engine defaults (or a picture's settings), then the preset, then the flags given.
    let start = match &args.settings_from {
        Some(png) => easel::export::import::import_png(png)?.request,
        None => GenerationRequest::default(),
    };
    let base = easel::job::with_preset(start, &preset);
    let prompt = args.prompt.clone().unwrap_or_else(|| base.prompt.clone());
    let init = match &args.init_image {
        Some(p) => Some(read_image(p, "init image")?),
        None => None,
    };
    let control_flags =
        args.controls.iter().map(|s| super::control::parse_flag(s)).collect::<Result<Vec<_>, _>>()?;
    let flag_loras =
        args.loras.iter().map(|s| super::loras::parse_flag(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut loras = flag_loras.clone();
    loras.extend(super::loras::resolve_tags(&prompt, args.lora_dir.as_deref())?);
    if let (Some(i), Some(p)) = (&init, &args.init_image) {
        if args.width.is_none() && args.height.is_none() && (i.width() < 64 || i.height() < 64) {
            return Err(Error::bad_file(
                format!(
                    "the init image is {}×{}; pictures start at 64×64 — use a larger one, or give --width and --height to stretch it",
                    i.width(),
                    i.height()
                ),
                p,
            )
            .into());
        }
    }
    // An init image sets the size unless a flag does; a preset's size applies to txt2img.
    let (default_w, default_h) = init
        .as_ref()
        .map_or((base.width, base.height), |i| (i.width() as usize / 8 * 8, i.height() as usize / 8 * 8));
    let mut request = GenerationRequest {
        prompt: prompt.clone(),
        negative_prompt: args.negative.clone().unwrap_or(base.negative_prompt),
        sampler: args.sampler.unwrap_or(base.sampler),
        steps: args.steps.unwrap_or(base.steps),
        cfg_scale: args.cfg.unwrap_or(base.cfg_scale),
        seed: args
            .seed
            .or(args.settings_from.as_ref().map(|_| base.seed))
            .unwrap_or_else(easel::engine::request::random_seed),
        width: args.width.unwrap_or(default_w),
        height: args.height.unwrap_or(default_h),
        batch: args.batch.unwrap_or(base.batch),
        strength: args.strength.unwrap_or(base.strength),
        init_image: args.init_image.clone(),
        mask: args.mask.clone(),
        noise: args.noise.clone(),
        loras,
        keep_unmasked: args.keep_unmasked,
        micro: easel::engine::request::MicroConditioning {
            original_size: args.original_size,
            crop_top_left: args.crop_top_left.unwrap_or_default(),
            target_size: args.target_size,
        },
        vae: args.vae.clone().or(base.vae),
        spacing: args.spacing.or(base.spacing),
        emphasis: args.emphasis.unwrap_or(base.emphasis),
        clip_skip: args.clip_skip.unwrap_or(base.clip_skip),
        rng: args.rng.unwrap_or(base.rng),
        ensd: args.ensd.unwrap_or(base.ensd),
        sampler_impl: args.sampler_impl.unwrap_or(base.sampler_impl),
        embeddings_dir: args.embeddings_dir.clone().or_else(default_embeddings_dir),
        controls: super::control::units(base.controls, &control_flags),
    };
    request.validate()?;
    check_output(&args.output)?;
    let outputs = output_paths(&args.output, request.batch);
    for path in &outputs {
        easel::files::check_destination(path, args.overwrite)?;
    }
    let sized =
        args.width.is_some() || args.height.is_some() || init.is_some() || args.settings_from.is_some();
    let mut inputs = read_inputs(&request, init)?;
    let model_path = super::resolve_model(&args.model)?;
    let device = args.device.open()?;
    let dtype = args.dtype.dtype_on(&device)?;

    let spinner = ProgressBar::new_spinner().with_message(format!("loading {}", model_path.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut model = StableDiffusion::load(&model_path, &device, dtype)?;
    spinner.finish_and_clear();
    // Without a size from a flag, an init image or the preset, pictures take the family's own.
    if !sized && preset.width.is_none() && preset.height.is_none() {
        (request.width, request.height) = model.family.native_size();
    }
    if let Some(p) = args.prediction {
        model.scheduler_config.insert("prediction_type".into(), serde_json::Value::String(p.id().into()));
    }
    let controlnet_dir = super::control::dir(args.controlnet_dir.as_deref());
    easel::job::resolve_controlnets(&mut request, &controlnet_dir)?;
    inputs.controls = prepare_controls(&model, &request, &inputs, &control_flags, &controlnet_dir)?;
    let stack = super::loras::apply(&mut model, &request.loras)?;
    model.use_vae(request.vae.as_deref())?;
    let provenance = easel::job::provenance(&model, easel::job::model_hash(&model_path)?, &stack, &request)?;
    let saved_prompt = easel::engine::lora::tags::prompt_with_tags(&request.prompt, &flag_loras);

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // A second Ctrl-C ends at once; the first stops cleanly after the current step.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step… (Ctrl-C again to quit now)");
    })
    .context("cannot install the Ctrl-C handler")?;

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {per_sec}  eta {eta}")
            .map_err(|e| anyhow::anyhow!(e))?
            .progress_chars("=> "),
    );
    let mut on_progress = |p: easel::engine::Progress| {
        if p.step == 1 {
            bar.reset();
            bar.set_length(p.total as u64);
            bar.set_prefix(format!("picture {}/{}", p.image + 1, request.batch));
        }
        bar.set_position(p.step as u64);
    };
    let mut written = Vec::new();
    let mut on_image = |img: easel::engine::GeneratedImage| -> easel::Result<()> {
        let path = &outputs[written.len()];
        let texts =
            easel::export::generation_texts(&request, &saved_prompt, img.seed, &provenance, &img.timings);
        save_png(path, &img.image, &texts, args.overwrite)?;
        // The process's peak so far: loading included, as a user's machine must hold it.
        let peak = easel::memory::peak_rss_bytes()
            .map_or(String::new(), |b| format!(", peak memory {:.2} GB", b as f64 / 1e9));
        let line = format!(
            "wrote {} (seed {}, {:.1} s{peak})",
            path.display(),
            img.seed,
            img.timings.text_secs + img.timings.denoise_secs + img.timings.decode_secs
        );
        // A hidden bar (output not a terminal) drops its printed lines; scripts still need them.
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        written.push(path.clone());
        Ok(())
    };
    let result =
        easel::engine::generate_each(&model, &request, &inputs, &mut on_progress, &mut on_image, &cancel);
    bar.finish_and_clear();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(Error::Cancelled) => {
            eprintln!("cancelled; {} finished picture(s) were saved", written.len());
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads each unit's ControlNet and makes its map (writing it where `save=` asks).
fn prepare_controls(
    model: &StableDiffusion,
    request: &GenerationRequest,
    inputs: &GenerationInputs,
    flags: &[super::control::ControlFlag],
    dir: &Path,
) -> anyhow::Result<Vec<easel::engine::controlnet::ControlInput>> {
    use easel::engine::controlnet::prepare;
    for (i, (spec, flag)) in request.controls.iter().zip(flags).enumerate() {
        let (Some(save), Some(image)) = (&flag.save, &spec.image) else { continue };
        let picture = prepare::read_picture(image, i)?;
        let map = prepare::control_map(
            spec,
            &picture,
            request.width as u32,
            request.height as u32,
            inputs.mask.as_ref(),
        )?;
        save_png(save, &map.image, &[], false)?;
        eprintln!("wrote unit {i}'s control map to {}", save.display());
    }
    let mut cache = prepare::ControlNetCache::default();
    Ok(prepare::prepare(model, request, None, inputs.mask.as_ref(), dir, &mut cache)?)
}

/// Refuses an output whose folder cannot take it before minutes go into generating it (what
/// lies at each output path is checked by `check_destination`).
fn check_output(out: &Path) -> Result<(), Error> {
    if out.is_dir() || out.as_os_str().to_string_lossy().ends_with(std::path::MAIN_SEPARATOR) {
        return Err(Error::BadRequest(format!(
            "-o {} is a folder; give a file name inside it, such as {}",
            out.display(),
            out.join("picture.png").display()
        )));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::bad_file(
            "the output folder does not exist; create it first or choose another -o",
            dir,
        ));
    }
    Ok(())
}

/// OUT for one picture; OUT-1 … OUT-N for a batch.
fn output_paths(out: &Path, batch: usize) -> Vec<PathBuf> {
    if batch == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("easel");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("png");
    (1..=batch).map(|k| out.with_file_name(format!("{stem}-{k}.{ext}"))).collect()
}

fn read_image(path: &Path, what: &str) -> anyhow::Result<image::DynamicImage> {
    if !path.exists() {
        return Err(Error::not_found(what, path).into());
    }
    easel::files::refuse_special(path)?;
    image::open(path).map_err(|e| {
        Error::bad_file(
            format!("cannot read the {what} ({e}); use a PNG, JPEG, WebP, BMP or TIFF picture"),
            path,
        )
        .into()
    })
}

fn read_inputs(
    request: &GenerationRequest,
    init: Option<image::DynamicImage>,
) -> anyhow::Result<GenerationInputs> {
    let (w, h) = (request.width as u32, request.height as u32);
    let fit = |img: image::DynamicImage| {
        if img.width() == w && img.height() == h {
            img
        } else {
            img.resize_exact(w, h, FilterType::Lanczos3)
        }
    };
    let init_image = init.map(|i| fit(i).to_rgb8());
    let mask = match &request.mask {
        Some(p) => Some(fit(read_image(p, "mask")?).to_luma8()),
        None => None,
    };
    let noise = match &request.noise {
        Some(p) => {
            let mut tensors = easel::engine::weights::read_safetensors(p)?;
            let t = tensors.remove("noise").ok_or_else(|| {
                Error::bad_file(
                    "the noise file has no tensor named `noise` (an f32 tensor [1, 4, H/8, W/8])",
                    p,
                )
            })?;
            use candle_core::DType;
            if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16 | DType::F64) || t.rank() != 4 {
                return Err(Error::bad_file(
                    format!(
                        "its `noise` tensor is {:?} of shape {:?}; starting noise is a float tensor [1, 4, H/8, W/8]",
                        t.dtype(),
                        t.dims()
                    ),
                    p,
                )
                .into());
            }
            Some(t.to_dtype(DType::F32)?)
        }
        None => None,
    };
    Ok(GenerationInputs { init_image, mask, noise, controls: Vec::new() })
}
