//! From a request's units to runnable ones: each unit's picture (a file, or the studio's canvas)
//! fitted to the generation's size and preprocessed into its map, its ControlNet found (a path,
//! or a name in the ControlNet folder, as A1111's parameters give it) and loaded once per model.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, RgbImage};

use super::{ControlInput, ControlNet, ControlSpec};
use crate::engine::preprocess::{self, ControlMap};
use crate::engine::{GenerationRequest, StableDiffusion};
use crate::error::{Error, Result, Setting};

/// Where ControlNets are looked up by name unless told otherwise (A1111 keeps them in
/// `models/ControlNet`).
pub const DEFAULT_DIR: &str = "models/controlnet";

/// Extensions a ControlNet file can have, in the order a name is tried.
const EXTENSIONS: [&str; 4] = ["safetensors", "pth", "ckpt", "bin"];

/// ControlNets loaded for the current model, kept between jobs (a unit's network is read once;
/// the cache goes with the model).
#[derive(Default)]
pub struct ControlNetCache {
    nets: HashMap<PathBuf, Arc<ControlNet>>,
}

impl ControlNetCache {
    /// The ControlNet at `path`, loaded for `model` on first use.
    pub fn get(&mut self, path: &Path, model: &StableDiffusion) -> Result<Arc<ControlNet>> {
        if let Some(net) = self.nets.get(path) {
            return Ok(Arc::clone(net));
        }
        let net = Arc::new(super::load(path, model.unet.config(), &model.device, model.dtype)?);
        self.nets.insert(path.to_path_buf(), Arc::clone(&net));
        Ok(net)
    }
}

/// The file or folder a unit names: an existing path, or a name (A1111's `control_v11p_sd15_canny`,
/// with or without its ` [hash]`) found in `dir`.
pub fn resolve(model: &Path, dir: &Path) -> Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let name = model.to_string_lossy();
    let name = name.split(" [").next().unwrap_or(&name).trim();
    let bare = Path::new(name).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut candidates = vec![dir.join(name), dir.join(&bare)];
    candidates.extend(EXTENSIONS.iter().map(|e| dir.join(format!("{bare}.{e}"))));
    if let Some(found) = candidates.into_iter().find(|p| p.exists()) {
        return Ok(found);
    }
    Err(Error::setting(
        Setting::Control,
        format!(
            "the ControlNet {name} was not found, neither as a path nor in {}; put the file there or give its path",
            dir.display()
        ),
    ))
}

/// The map of unit `index` from `picture`, at `width`×`height`.
pub fn control_map(
    spec: &ControlSpec,
    picture: &RgbImage,
    width: u32,
    height: u32,
    mask: Option<&GrayImage>,
) -> Result<ControlMap> {
    let fitted = preprocess::fit(picture, width, height, spec.resize);
    preprocess::apply(&spec.preprocess, &fitted, mask)
}

/// Reads unit `index`'s picture file.
pub fn read_picture(path: &Path, index: usize) -> Result<RgbImage> {
    if !path.exists() {
        return Err(Error::not_found(format!("control picture of unit {index}"), path));
    }
    crate::files::refuse_special(path)?;
    image::open(path).map(|i| i.to_rgb8()).map_err(|e| {
        Error::bad_file(
            format!("cannot read unit {index}'s control picture ({e}); use a PNG, JPEG, WebP, BMP or TIFF picture"),
            path,
        )
    })
}

/// Runnable units for `request` on `model`: pictures from the units' files, or `canvas` for a
/// unit without one; `mask` is what the inpaint preprocessor marks; names are looked up in `dir`.
pub fn prepare(
    model: &StableDiffusion,
    request: &GenerationRequest,
    canvas: Option<&RgbImage>,
    mask: Option<&GrayImage>,
    dir: &Path,
    cache: &mut ControlNetCache,
) -> Result<Vec<ControlInput>> {
    let (w, h) = (request.width as u32, request.height as u32);
    let mut units = Vec::with_capacity(request.controls.len());
    for (i, spec) in request.controls.iter().enumerate() {
        spec.check(i)?;
        let picture = match (&spec.image, canvas) {
            (Some(path), _) => read_picture(path, i)?,
            (None, Some(canvas)) => canvas.clone(),
            (None, None) => {
                return Err(Error::setting(
                    Setting::Control,
                    format!("unit {i} has no control picture; give one (image=PATH)"),
                ))
            }
        };
        let map = control_map(spec, &picture, w, h, mask).map_err(|e| match e {
            Error::InvalidSetting { setting, message } => {
                Error::InvalidSetting { setting, message: format!("unit {i}: {message}") }
            }
            other => other,
        })?;
        let net = cache.get(&resolve(&spec.model, dir)?, model)?;
        units.push(ControlInput::new(net, &map, spec, &model.device)?);
    }
    Ok(units)
}

/// The hash A1111's ControlNet extension shows after a model's name (`[d14c016b]`): A1111's old
/// model hash, the first 8 hex digits of the sha256 of the 64 KiB at 1 MiB into the file (of
/// nothing, for smaller files). Folders have none.
pub fn old_hash(path: &Path) -> Option<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).ok().filter(|_| path.is_file())?;
    let mut buf = Vec::with_capacity(0x10000);
    if file.seek(SeekFrom::Start(0x100000)).is_ok() {
        file.take(0x10000).read_to_end(&mut buf).ok()?;
    }
    let digest = sha2::Sha256::digest(&buf);
    Some(digest.iter().take(4).map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_the_folder_with_or_without_a_hash() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let file = dir.path().join("control_v11p_sd15_canny.pth");
        std::fs::write(&file, b"x").map_err(|e| Error::Internal(e.to_string()))?;
        assert_eq!(resolve(Path::new("control_v11p_sd15_canny [d14c016b]"), dir.path())?, file);
        assert_eq!(resolve(Path::new("control_v11p_sd15_canny"), dir.path())?, file);
        assert_eq!(resolve(&file, Path::new("/nowhere"))?, file);
        let missing = resolve(Path::new("control_x"), dir.path()).expect_err("refused").to_string();
        assert!(missing.contains("control_x was not found"), "{missing}");
        Ok(())
    }

    #[test]
    fn the_old_hash_reads_one_mebibyte_in() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let small = dir.path().join("small.pth");
        std::fs::write(&small, b"tiny").map_err(|e| Error::Internal(e.to_string()))?;
        // sha256 of nothing.
        assert_eq!(old_hash(&small).as_deref(), Some("e3b0c442"));
        assert_eq!(old_hash(dir.path()), None);
        Ok(())
    }
}
