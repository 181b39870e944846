//! Reading tensors from the files users have: safetensors (any float dtype) and PyTorch `.ckpt`
//! zip archives, which are read by a pickle reader that never executes code.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// Named tensors read from one or more files.
pub type TensorMap = HashMap<String, Tensor>;

/// Reads every tensor of a `.safetensors` file to the CPU; see [`parse_safetensors`].
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    parse_safetensors(&read_file(path)?, path)
}

/// The bytes of a weights file, with a sentence for a missing or unreadable one.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("weights file", path),
        _ => Error::io("cannot read the weights file", e, path),
    })
}

/// The tensors of safetensors bytes read from `path`, checking the header first so a truncated or
/// foreign file gets a sentence instead of a panic.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<TensorMap> {
    if let Err(e) = safetensors::SafeTensors::deserialize(bytes) {
        return Err(Error::bad_file(
            format!("this is not a complete safetensors file ({e}); it may be truncated — download it again"),
            path,
        ));
    }
    candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| Error::bad_file(format!("cannot read the tensors of this safetensors file ({e})"), path))
}

/// What a safetensors header says, read without the tensors.
pub struct SafetensorsHeader {
    /// The string metadata (`__metadata__`).
    pub metadata: HashMap<String, String>,
    /// The tensor names.
    pub names: Vec<String>,
    /// Where the tensor data starts (8 + the header's length).
    pub data_offset: usize,
}

/// Reads only the header of a safetensors file.
pub fn read_safetensors_header(path: &Path) -> Result<SafetensorsHeader> {
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
    parse_header(&header, path)
}

/// Parses header bytes (the JSON after the 8-byte length).
fn parse_header(header: &[u8], path: &Path) -> Result<SafetensorsHeader> {
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|_| Error::bad_file("the safetensors header is not valid JSON", path))?;
    let object = json.as_object();
    let metadata = object
        .and_then(|o| o.get("__metadata__"))
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default();
    let names =
        object.map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect()).unwrap_or_default();
    Ok(SafetensorsHeader { metadata, names, data_offset: 8 + header.len() })
}

/// The header of safetensors bytes already in memory.
pub fn header_of(bytes: &[u8], path: &Path) -> Result<SafetensorsHeader> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .ok_or_else(|| Error::bad_file("this file is too short to be a safetensors file", path))?;
    let header = bytes
        .get(8..8usize.saturating_add(len))
        .ok_or_else(|| Error::bad_file("the safetensors header is cut short; the file is truncated", path))?;
    parse_header(header, path)
}

/// The string metadata (`__metadata__`) of a safetensors header, without reading the tensors.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    Ok(read_safetensors_header(path)?.metadata)
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
