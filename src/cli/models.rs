//! `easel models`: pull diffusers models from the hub into the shared cache, and list what is here.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use easel::engine::Family;

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Download a diffusers model (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5), `inception`
    /// for the FID Inception weights `easel eval` uses, `taesd` for the tiny autoencoder of live
    /// previews and live painting, or with --file one file of a repository (a LoRA).
    Pull {
        /// The hub id, owner/name.
        repo_id: String,
        /// Prefer the half-size fp16 weights when the repository has them.
        #[arg(long)]
        fp16: bool,
        /// Download only this file of the repository (e.g. ByteDance/Hyper-SD's
        /// Hyper-SD15-8steps-CFG-lora.safetensors) and print its path.
        #[arg(long)]
        file: Option<String>,
    },
    /// List models in the hub cache and in ./models.
    List,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Pull { repo_id, file: Some(file), .. } => {
            let path = easel::hub::pull_file(&repo_id, &file, None)?;
            println!("{file} of {repo_id} is ready: {}", path.display());
        }
        Action::Pull { repo_id, .. } if repo_id == "inception" => {
            let path = easel::hub::pull_inception(std::path::Path::new("models"))?;
            println!("the FID Inception weights are ready: {}", path.display());
        }
        Action::Pull { repo_id, .. } if preview_family(&repo_id).is_some() => {
            let family = preview_family(&repo_id).unwrap_or(Family::Sd1);
            let path = easel::hub::pull_preview_decoder(family, None)?;
            println!("the tiny preview decoder for {family} is ready: {}", path.display());
        }
        Action::Pull { repo_id, fp16, file: None } => {
            let dir = easel::hub::pull(&repo_id, fp16)?;
            println!("{repo_id} is ready: {}", dir.display());
            println!("use it with: easel generate --model {repo_id} --prompt \"…\" -o out.png");
        }
        Action::List => {
            let cached = easel::hub::list_cached();
            let local = local_models();
            if cached.is_empty() && local.is_empty() {
                println!("no models yet: run `easel models pull <owner/name>` or put a .safetensors checkpoint in ./models");
            }
            for (id, dir) in cached {
                println!("{id}\t{}", dir.display());
            }
            for path in local {
                println!("{}", path.display());
            }
            for family in [Family::Sd1, Family::Sdxl] {
                let name = easel::hub::preview_decoder_name(family);
                match easel::hub::find_preview_decoder(family) {
                    Some(path) => println!("{family} live previews: tiny decoder {}", path.display()),
                    None => println!(
                        "{family} live previews: approximate colours (`easel models pull {name}` for detailed ones)"
                    ),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The family whose tiny preview decoder `name` means (`taesd`, `taesdxl` or their hub ids).
fn preview_family(name: &str) -> Option<Family> {
    [Family::Sd1, Family::Sdxl]
        .into_iter()
        .find(|&f| name == easel::hub::preview_decoder_name(f) || name == easel::hub::preview_decoder_repo(f))
}

/// Checkpoints and diffusers folders in ./models.
fn local_models() -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir("models") else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        // The tiny preview decoder is no model to draw with.
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("taesd")))
        .filter(|p| {
            p.join("model_index.json").exists()
                || matches!(p.extension().and_then(|e| e.to_str()), Some("safetensors" | "ckpt"))
        })
        .collect();
    found.sort();
    found
}
