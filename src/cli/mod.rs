//! Command-line parsing: clap's raw arguments are turned into validated library values before any
//! work starts ("parse, don't validate"), then each subcommand runs.

mod bench;
#[cfg(feature = "gui")]
mod bench_live;
mod control;
mod errors;
mod eval;
mod generate;
mod inspect;
mod loras;
mod models;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use errors::describe;

/// Easel: draw and generate pictures with Stable Diffusion and LoRA adapters.
#[derive(Parser)]
#[command(name = "easel", version = easel_version(), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Open the studio with this model loaded (a diffusers folder, a checkpoint, or a pulled hub id).
    #[arg(long, value_name = "PATH")]
    model: Option<String>,
}

fn easel_version() -> &'static str {
    Box::leak(easel::version().into_boxed_str())
}

#[derive(Subcommand)]
enum Command {
    /// Generate pictures from a prompt (txt2img, img2img, inpainting).
    Generate(Box<generate::GenerateArgs>),
    /// Download or list Stable Diffusion models.
    Models(models::ModelsArgs),
    /// Describe a model, checkpoint, safetensors file or picture's metadata.
    Inspect(inspect::InspectArgs),
    /// Measure UNet and VAE speed and peak memory on this machine.
    Bench(bench::BenchArgs),
    /// Score generated pictures against references: FID, KID, IS, PSNR, SSIM.
    Eval(Box<eval::EvalArgs>),
    /// List the settings presets `generate --preset` takes.
    Presets,
}

/// Parses the command line and runs the chosen subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    let command = Cli::command().mut_subcommand("generate", generate::with_defaults);
    let cli = match command.try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => return Ok(errors::usage(e)),
    };
    let Some(command) = cli.command else {
        return studio(cli.model);
    };
    match command {
        Command::Generate(args) => generate::run(*args),
        Command::Models(args) => models::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::Presets => {
            for (name, description) in easel::presets::list() {
                println!("{name:<20} {description}");
            }
            if let Some(dir) = easel::presets::user_dir() {
                println!("(your own presets go in {} as NAME.json)", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens the desktop studio (`easel` with no subcommand).
#[cfg(feature = "gui")]
fn studio(model: Option<String>) -> anyhow::Result<ExitCode> {
    easel::gui::run(easel::gui::LaunchOptions::system(model))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "gui"))]
fn studio(_model: Option<String>) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this easel was built without the studio (the `gui` feature); use a subcommand, see `easel --help`"
    )
}

/// Resolves `--model`: a local path, or a hub id already pulled into the cache.
pub fn resolve_model(spec: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(easel::hub::resolve_model(spec)?)
}
