//! Model downloads from the Hugging Face hub into its standard cache (shared with diffusers and
//! other tools), resumable and with a progress bar, plus look-ups in that cache so a pulled model
//! works offline by its hub id.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;

use crate::engine::Family;
use crate::error::{Error, Result};

/// Parts of a diffusers repository Easel needs; safety checkers and feature extractors are
/// skipped. SDXL repositories add `text_encoder_2` (pulled when the listing has one).
const PARTS: [(&str, &str); 4] = [
    ("unet", "diffusion_pytorch_model"),
    ("vae", "diffusion_pytorch_model"),
    ("text_encoder", "model"),
    ("text_encoder_2", "model"),
];

/// Whether `s` looks like a hub id (`owner/name`) rather than a local path. Both parts use the
/// hub's characters only, so an id can never name a folder outside the cache.
pub fn looks_like_repo_id(s: &str) -> bool {
    let part = |p: &str| {
        p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.contains("..")
    };
    let mut parts = s.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if part(a) && part(b))
        && !Path::new(s).exists()
}

/// Whether a file name from a repository listing is a plain relative path (`unet/config.json`):
/// a hostile listing could otherwise name `../../somewhere` and have it written there.
fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['\\', '\0', ':'])
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A file of `repo_id` in the local cache, if it is there and really inside that repository's
/// cache folder: the cache's `refs/main` is a file anyone can edit, and hf-hub joins whatever it
/// holds (an absolute path included) onto the snapshot folder.
fn cached_file(repo_id: &str, name: &str) -> Option<PathBuf> {
    if !is_safe_file_name(name) {
        return None;
    }
    let cache = Cache::from_env();
    let path = cache.clone().model(repo_id.to_string()).get(name)?;
    let repo_dir = cache.path().join(format!("models--{}", repo_id.replace('/', "--")));
    let (real, root) = (path.canonicalize().ok()?, repo_dir.canonicalize().ok()?);
    real.starts_with(&root).then_some(path)
}

/// The local snapshot folder of a diffusers model pulled earlier, if the cache has one.
pub fn cached_model(repo_id: &str) -> Option<PathBuf> {
    cached_file(repo_id, "model_index.json").and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The local snapshot folder of a diffusers ControlNet (a `config.json` beside its weights at the
/// repository's root) pulled earlier, if the cache has one.
pub fn cached_controlnet(repo_id: &str) -> Option<PathBuf> {
    let dir = cached_file(repo_id, "config.json")?.parent()?.to_path_buf();
    CONTROLNET_WEIGHTS.iter().any(|w| dir.join(w).is_file()).then_some(dir)
}

/// A ControlNet repository's weight files, in the order they are preferred.
const CONTROLNET_WEIGHTS: [&str; 3] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
];

/// The files of a ControlNet repository Easel needs: its config and one weight file (the fp16
/// variant first when `fp16`).
fn choose_controlnet_files(files: &[String], fp16: bool) -> Option<Vec<String>> {
    let has = |f: &str| files.iter().any(|x| x == f);
    if !has("config.json") {
        return None;
    }
    let mut order = CONTROLNET_WEIGHTS.to_vec();
    if fp16 {
        order.swap(0, 1);
    }
    let weights = order.into_iter().find(|f| has(f))?;
    Some(vec!["config.json".to_string(), weights.to_string()])
}

/// Every diffusers model in the local hub cache: (hub id, snapshot folder).
pub fn list_cached() -> Vec<(String, PathBuf)> {
    let root = Cache::from_env().path().clone();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let id = name.strip_prefix("models--")?.replacen("--", "/", 1);
            cached_model(&id).map(|p| (id, p))
        })
        .collect();
    found.sort();
    found
}

/// Downloads what Easel needs of a diffusers repository (configs, tokenizer, the UNet, VAE and
/// text-encoder weights, preferring the fp16 variant when `fp16` is set) and returns the snapshot
/// folder. Files already complete in the cache are not fetched again; partial ones resume.
pub fn pull(repo_id: &str, fp16: bool) -> Result<PathBuf> {
    pull_reporting(repo_id, fp16, None)
}

/// A model the user named: an existing path, or a hub id already pulled into the cache.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.exists() {
        return Ok(path);
    }
    if looks_like_repo_id(spec) {
        if let Some(dir) = cached_model(spec) {
            return Ok(dir);
        }
        return Err(Error::Hub(format!(
            "{spec} is not downloaded yet; pull it first (`easel models pull {spec}`), or choose a local folder or file"
        )));
    }
    Err(Error::not_found("model", &path))
}

/// Download progress for one file: its name, bytes done, bytes in all.
pub type PullReporter<'a> = &'a mut (dyn FnMut(&str, u64, u64) + Send);

/// [`pull`], telling `report` (when given) how each file's download goes instead of drawing
/// progress bars on the terminal; used by the studio's model picker.
pub fn pull_reporting(repo_id: &str, fp16: bool, report: Option<PullReporter>) -> Result<PathBuf> {
    let offline = |e: &dyn std::fmt::Display| {
        Error::Hub(format!(
            "cannot reach the Hugging Face hub for {repo_id} ({e}). You may be offline: models already \
             on disk work without a network — open their folder or file"
        ))
    };
    let api = ApiBuilder::from_env().with_progress(report.is_none()).build().map_err(|e| offline(&e))?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info().map_err(|e| offline(&e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    if !files.iter().any(|f| f == "model_index.json") {
        // A ControlNet repository (lllyasviel's, xinsir's…) is one model: a config and its weights.
        if let Some(wanted) = choose_controlnet_files(&files, fp16) {
            return download(&repo, (repo_id, &offline), &wanted, "config.json", report);
        }
        return Err(Error::Hub(format!(
            "{repo_id} is not a diffusers model or ControlNet (it has no model_index.json, nor a config.json \
             beside diffusion_pytorch_model weights); download its .safetensors file and open that"
        )));
    }
    let wanted = choose_files(&files, fp16).map_err(Error::Hub)?;
    download(&repo, (repo_id, &offline), &wanted, "model_index.json", report)
}

/// Downloads one file of a repository into the hub cache (a LoRA such as ByteDance/Hyper-SD's
/// `Hyper-SD15-8steps-CFG-lora.safetensors`) and returns its path; a file already there is not
/// fetched again, so this works offline once done.
pub fn pull_file(repo_id: &str, file: &str, report: Option<PullReporter>) -> Result<PathBuf> {
    if let Some(done) = cached_file(repo_id, file) {
        return Ok(done);
    }
    let offline = |e: &dyn std::fmt::Display| {
        Error::Hub(format!(
            "cannot download {file} from {repo_id} ({e}). You may be offline: download it elsewhere and \
             choose the file"
        ))
    };
    let api = ApiBuilder::from_env().with_progress(report.is_none()).build().map_err(|e| offline(&e))?;
    let repo = api.model(repo_id.to_string());
    let folder = download(&repo, (repo_id, &offline), &[file.to_string()], file, report)?;
    Ok(folder.join(file))
}

/// A file of a repository already in the hub cache.
pub fn cached_repo_file(repo_id: &str, file: &str) -> Option<PathBuf> {
    cached_file(repo_id, file)
}

/// Turns a network failure into the sentence the user sees.
type OfflineError<'a> = dyn Fn(&dyn std::fmt::Display) -> Error + 'a;

/// Fetches `wanted` files of `repo` not already complete in the cache; returns the snapshot folder
/// that holds `marker` (one of them).
fn download(
    repo: &hf_hub::api::sync::ApiRepo,
    (repo_id, offline): (&str, &OfflineError<'_>),
    wanted: &[String],
    marker: &str,
    mut report: Option<PullReporter>,
) -> Result<PathBuf> {
    let mut folder = None;
    for name in wanted {
        if !is_safe_file_name(name) {
            return Err(Error::Hub(format!(
                "{repo_id} lists a file named {name:?}, which is not a plain file name"
            )));
        }
        let path = match (cached_file(repo_id, name), report.as_deref_mut()) {
            (Some(done), _) => done,
            (None, Some(report)) => repo
                .download_with_progress(name, Reporter { report, file: name.clone(), total: 0, done: 0 })
                .map_err(|e| offline(&e))?,
            (None, None) => repo.get(name).map_err(|e| offline(&e))?,
        };
        if name == marker {
            folder = path.parent().map(Path::to_path_buf);
        }
    }
    folder.ok_or_else(|| Error::Hub(format!("{repo_id}: the download finished without {marker}")))
}

/// The hub repository of the tiny decoder for a family's live previews (diffusers layout): TAESD
/// for SD 1.x/2.x, TAESDXL for SDXL, whose latents are another space.
pub fn preview_decoder_repo(family: Family) -> &'static str {
    match family {
        Family::Sdxl => "madebyollin/taesdxl",
        Family::Sd1 | Family::Sd2 => "madebyollin/taesd",
    }
}

/// The short name of a family's tiny decoder (`taesd`, `taesdxl`), as `easel models pull` takes it
/// and as the local files are named.
pub fn preview_decoder_name(family: Family) -> &'static str {
    match family {
        Family::Sdxl => "taesdxl",
        Family::Sd1 | Family::Sd2 => "taesd",
    }
}

/// The files of the preview decoder's repository Easel reads.
const PREVIEW_DECODER_FILES: [&str; 2] = ["config.json", "diffusion_pytorch_model.safetensors"];

/// A family's tiny preview decoder on this computer, if any: `models/taesd` (a diffusers
/// folder), `models/taesd_decoder.safetensors` (the original single file), or a copy pulled into
/// the hub cache (`taesdxl` for SDXL).
pub fn find_preview_decoder(family: Family) -> Option<PathBuf> {
    let name = preview_decoder_name(family);
    let local = [
        PathBuf::from(format!("models/{name}")),
        PathBuf::from(format!("models/{name}_decoder.safetensors")),
    ];
    if let Some(p) = local.iter().find(|p| p.join("config.json").exists() || p.is_file()) {
        return Some(p.clone());
    }
    let repo_id = preview_decoder_repo(family);
    let weights = cached_file(repo_id, PREVIEW_DECODER_FILES[1])?;
    cached_file(repo_id, PREVIEW_DECODER_FILES[0])?;
    weights.parent().map(Path::to_path_buf)
}

/// Downloads a family's tiny preview decoder (about 10 MB) into the hub cache and returns its folder.
pub fn pull_preview_decoder(family: Family, report: Option<PullReporter>) -> Result<PathBuf> {
    let repo_id = preview_decoder_repo(family);
    let name = preview_decoder_name(family);
    let offline = |e: &dyn std::fmt::Display| {
        Error::Hub(format!(
            "cannot reach the Hugging Face hub for {repo_id} ({e}). You may be offline: previews work \
             without it (in approximate colours), or copy {repo_id}'s config.json and \
             diffusion_pytorch_model.safetensors into models/{name}/"
        ))
    };
    let api = ApiBuilder::from_env().with_progress(report.is_none()).build().map_err(|e| offline(&e))?;
    let repo = api.model(repo_id.to_string());
    let wanted: Vec<String> = PREVIEW_DECODER_FILES.iter().map(|f| f.to_string()).collect();
    download(&repo, (repo_id, &offline), &wanted, PREVIEW_DECODER_FILES[0], report)
}

/// Adapts hf-hub's progress trait to a plain callback.
struct Reporter<'a> {
    report: &'a mut (dyn FnMut(&str, u64, u64) + Send),
    file: String,
    total: u64,
    done: u64,
}

impl hf_hub::api::Progress for Reporter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        (self.report)(&self.file, 0, self.total);
    }
    fn update(&mut self, size: usize) {
        self.done += size as u64;
        (self.report)(&self.file, self.done, self.total);
    }
    fn finish(&mut self) {
        (self.report)(&self.file, self.total, self.total);
    }
}

/// The files of a repository listing that make up a usable model.
fn choose_files(files: &[String], fp16: bool) -> std::result::Result<Vec<String>, String> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let mut wanted: Vec<String> = files
        .iter()
        .filter(|f| {
            f.as_str() == "model_index.json"
                || f.ends_with("/config.json")
                || f.as_str() == "scheduler/scheduler_config.json"
                || ((f.starts_with("tokenizer/") || f.starts_with("tokenizer_2/"))
                    && (f.ends_with(".json") || f.ends_with(".txt")))
        })
        .filter(|f| !f.starts_with("safety_checker/") && !f.starts_with("feature_extractor/"))
        .filter(|f| is_safe_file_name(f))
        .cloned()
        .collect();
    for (part, stem) in PARTS {
        if part == "text_encoder_2" && !has("text_encoder_2/config.json") {
            continue;
        }
        let mut order = vec![format!("{part}/{stem}.safetensors"), format!("{part}/{stem}.fp16.safetensors")];
        if fp16 {
            order.swap(0, 1);
        }
        order.push(format!("{part}/{stem}.bin"));
        match order.into_iter().find(|f| has(f)) {
            Some(f) => wanted.push(f),
            None => return Err(format!("the repository has no weights for its {part}")),
        }
    }
    Ok(wanted)
}

/// Where pytorch-fid publishes its FID Inception weights (overridable for mirrors and tests).
const INCEPTION_URL: &str =
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";

/// Downloads pytorch-fid's FID Inception weights into `dir` (resuming a partial download) and checks
/// the file against the hash prefix in its name. `EASEL_INCEPTION_URL` replaces the address.
pub fn pull_inception(dir: &Path) -> Result<PathBuf> {
    use std::io::{Read, Write};
    let name = crate::metrics::inception::WEIGHTS_FILE;
    let dest = dir.join(name);
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the models folder", e, dir))?;
    let url = std::env::var("EASEL_INCEPTION_URL").unwrap_or_else(|_| INCEPTION_URL.to_string());
    let part = dir.join(format!("{name}.part"));
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let offline = |e: &dyn std::fmt::Display| {
        Error::Hub(format!(
            "cannot download the Inception weights ({e}). You may be offline: download {INCEPTION_URL} \
             by other means and put it at {}",
            dest.display()
        ))
    };
    let mut request = ureq::get(&url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| offline(&e))?;
    let resumed = response.status() == 206;
    let total = response.header("Content-Length").and_then(|v| v.parse::<u64>().ok()).map(|n| {
        if resumed {
            n + have
        } else {
            n
        }
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(&part)
        .map_err(|e| Error::io("cannot write the download", e, &part))?;
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_position(if resumed { have } else { 0 });
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| offline(&e))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| Error::io("cannot write the download", e, &part))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    drop(file);
    let hash =
        crate::files::sha256_hex(&part).map_err(|e| Error::io("cannot read the download", e, &part))?;
    if !hash.starts_with("6726825d") {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Hub(format!(
            "the downloaded Inception weights are damaged (sha256 {}…); run the command again",
            &hash[..12]
        )));
    }
    std::fs::rename(&part, &dest).map_err(|e| Error::io("cannot move the download into place", e, &dest))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_safetensors_and_the_requested_variant() {
        let files: Vec<String> = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
            "safety_checker/config.json",
            "safety_checker/model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let full = choose_files(&files, false).expect("complete");
        assert!(full.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
        assert!(full.contains(&"text_encoder/model.fp16.safetensors".to_string()));
        assert!(!full.iter().any(|f| f.starts_with("safety_checker")));
        let half = choose_files(&files, true).expect("complete");
        assert!(half.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(!half.iter().any(|f| f.contains("text_encoder_2")), "SD 1.5 has one encoder");
    }

    #[test]
    fn sdxl_repositories_bring_the_second_encoder_and_tokenizer() {
        let mut files: Vec<String> = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "tokenizer/vocab.json",
            "tokenizer_2/vocab.json",
            "tokenizer_2/special_tokens_map.json",
            "text_encoder_2/config.json",
            "text_encoder_2/model.fp16.safetensors",
            "text_encoder_2/model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let half = choose_files(&files, true).expect("complete");
        for f in [
            "text_encoder_2/model.fp16.safetensors",
            "tokenizer_2/special_tokens_map.json",
            "text_encoder_2/config.json",
        ] {
            assert!(half.contains(&f.to_string()), "{f} in {half:?}");
        }
        assert!(!half.contains(&"text_encoder_2/model.safetensors".to_string()));
        files.retain(|f| !f.starts_with("text_encoder_2/model"));
        let err = choose_files(&files, true).expect_err("no weights");
        assert!(err.contains("text_encoder_2"), "{err}");
    }

    #[test]
    fn controlnet_repositories_bring_their_config_and_one_weight_file() {
        let files: Vec<String> = [
            "config.json",
            "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.safetensors",
            "images/input.png",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            choose_controlnet_files(&files, false),
            Some(vec!["config.json".into(), "diffusion_pytorch_model.safetensors".into()])
        );
        assert_eq!(
            choose_controlnet_files(&files, true),
            Some(vec!["config.json".into(), "diffusion_pytorch_model.fp16.safetensors".into()])
        );
        assert_eq!(choose_controlnet_files(&files[1..], false), None, "no config, no ControlNet");
    }

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(looks_like_repo_id("stable-diffusion-v1-5/stable-diffusion-v1-5"));
        assert!(!looks_like_repo_id("models/sd15.safetensors/x"));
        assert!(
            !looks_like_repo_id("../x") && !looks_like_repo_id("a/..") && !looks_like_repo_id("a/.hidden")
        );
        assert!(is_safe_file_name("unet/config.json"));
        for name in ["../x/config.json", "/etc/config.json", "a//config.json", "a\\..\\config.json", "./x"] {
            assert!(!is_safe_file_name(name), "{name}");
        }
        assert!(!looks_like_repo_id("./model"));
    }
}
