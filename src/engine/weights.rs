//! Reading tensors from the files users have: safetensors (any float dtype) and PyTorch `.ckpt`
//! zip archives, which are read by a pickle reader that never executes code.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// Named tensors read from one or more files.
pub type TensorMap = HashMap<String, Tensor>;

/// Reads every tensor of a `.safetensors` file to the CPU, checking the header first so a
/// truncated or foreign file gets a sentence instead of a panic.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("weights file", path),
        _ => Error::io("cannot read the weights file", e, path),
    })?;
    if let Err(e) = safetensors::SafeTensors::deserialize(&bytes) {
        return Err(Error::bad_file(
            format!("this is not a complete safetensors file ({e}); it may be truncated — download it again"),
            path,
        ));
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::bad_file(format!("cannot read the tensors of this safetensors file ({e})"), path))
}

/// The string metadata (`__metadata__`) of a safetensors header, without reading the tensors.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("cannot open the file", e, path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| Error::bad_file("this file is too short to be a safetensors file", path))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(Error::bad_file(
            "this is not a safetensors file (its header length is implausible)",
            path,
        ));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| Error::bad_file("the safetensors header is cut short; the file is truncated", path))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|_| Error::bad_file("the safetensors header is not valid JSON", path))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default())
}

/// Reads a PyTorch checkpoint (`.ckpt`, `.pt`, `.pth`, `.bin`) without running its pickle code.
/// Its tensors may sit under a `state_dict` entry, as Stable Diffusion checkpoints keep them.
pub fn read_pickle_checkpoint(path: &Path) -> Result<TensorMap> {
    let refuse = |detail: String| {
        Error::bad_file(
            format!(
                "cannot read this PyTorch checkpoint safely ({detail}); Easel never runs pickle code — \
                 convert it to .safetensors or download the .safetensors version"
            ),
            path,
        )
    };
    let attempt = |key: Option<&str>| candle_core::pickle::read_all_with_key(path, key);
    let entries = match attempt(Some("state_dict")) {
        Ok(v) if !v.is_empty() => v,
        _ => attempt(None).map_err(|e| refuse(e.to_string()))?,
    };
    if entries.is_empty() {
        return Err(refuse("no tensors were found in it".into()));
    }
    Ok(entries.into_iter().collect())
}

/// Moves tensors to `device` in `dtype` (float tensors only; integer ids keep their type).
pub fn to_compute(tensors: TensorMap, dtype: DType, device: &Device) -> Result<TensorMap> {
    let mut converted = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = if t.dtype().is_float() { t.to_dtype(dtype)? } else { t };
        converted.insert(name, t.to_device(device)?);
    }
    Ok(converted)
}

/// Wraps tensors already on the device for the model constructors. Tensors are shared, not
/// copied, so building a model twice from one map costs no memory.
pub fn var_builder(tensors: &TensorMap, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_tensors(tensors.clone(), dtype, device)
}

/// Turns a missing or misshapen weight into a sentence naming the part and the file.
pub fn explain_load_error(part: &str, path: &Path, err: Error) -> Error {
    match err {
        Error::Compute(e) => Error::bad_file(
            format!("the {part} weights do not fit the architecture its config describes ({e})"),
            path,
        ),
        other => other,
    }
}
