//! Reading tensors from the files users have: safetensors (any float dtype) and PyTorch `.ckpt`
//! zip archives, which are read by a pickle reader that never executes code.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// Named tensors read from one or more files.
pub type TensorMap = HashMap<String, Tensor>;

/// Reads every tensor of a `.safetensors` file to the CPU, in the file's dtypes; see
/// [`read_safetensors_selected`].
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    read_safetensors_selected(path, None, &|_| true)
}

/// Reads the tensors of a `.safetensors` file whose names `keep` accepts, one at a time straight
/// from the file, converting float tensors to `float` as each arrives. Loading thus never holds the
/// file's bytes beside its tensors, nor a whole full-precision copy beside the converted one: a
/// 2 GB checkpoint used to need 4 GB to load.
pub fn read_safetensors_selected(
    path: &Path,
    float: Option<DType>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<TensorMap> {
    let file = open(path)?;
    let file_len = file.metadata().map_err(|e| Error::io("cannot read the file", e, path))?.len();
    read_safetensors_from(&mut std::io::BufReader::new(file), file_len, path, float, keep)
}

/// [`read_safetensors_selected`] over any reader of `file_len` bytes (`path` names it in
/// messages); the fuzzing targets feed it bytes from memory.
pub fn read_safetensors_from(
    file: &mut (impl std::io::Read + std::io::Seek),
    file_len: u64,
    path: &Path,
    float: Option<DType>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<TensorMap> {
    use candle_core::safetensors::Load;
    let truncated = || {
        Error::bad_file(
            "this safetensors file is shorter than its header says; it may be truncated — download it again",
            path,
        )
    };
    let header = read_header_bytes(file, file_len, path)?;
    let layout: safetensors::tensor::Metadata = serde_json::from_slice(&header).map_err(|e| {
        Error::bad_file(format!("this is not a complete safetensors file ({e}); download it again"), path)
    })?;
    let data_available = file_len.saturating_sub(8 + header.len() as u64);
    if check_layout(&layout, path)? > data_available {
        return Err(truncated());
    }
    let mut tensors = TensorMap::new();
    let mut position = 0;
    for name in layout.offset_keys() {
        let Some(info) = layout.info(&name) else { continue };
        let (start, end) = info.data_offsets;
        if !keep(&name) {
            continue;
        }
        if start > position {
            // Skipped tensors lie between: seek over them instead of reading them.
            file.seek(std::io::SeekFrom::Current((start - position) as i64))
                .map_err(|e| Error::io("cannot read the file", e, path))?;
        }
        let mut bytes = vec![0u8; end - start];
        file.read_exact(&mut bytes).map_err(|_| truncated())?;
        position = end;
        let view = safetensors::tensor::TensorView::new(info.dtype, info.shape.clone(), &bytes)
            .map_err(|e| Error::bad_file(format!("tensor `{name}` is malformed ({e})"), path))?;
        let tensor = view
            .load(&Device::Cpu)
            .map_err(|e| Error::bad_file(format!("cannot read tensor `{name}` ({e})"), path))?;
        let tensor = match float {
            Some(dtype) if tensor.dtype().is_float() => tensor.to_dtype(dtype)?,
            _ => tensor,
        };
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// Checks what a header claims before anything is allocated from it: the tensors must tile the
/// data area in order, and each must hold exactly its shape's bytes, with every product checked
/// (a hostile header can make `offsets` or `shape` overflow, and an unchecked sum then asks the
/// allocator for exabytes, which aborts the process). Returns the data area's length.
fn check_layout(layout: &safetensors::tensor::Metadata, path: &Path) -> Result<u64> {
    let mut expected_start = 0usize;
    for name in layout.offset_keys() {
        let Some(info) = layout.info(&name) else { continue };
        let (start, end) = info.data_offsets;
        let bytes = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        let fits = start == expected_start && end >= start && bytes == Some(end - start);
        if !fits {
            return Err(Error::bad_file(
                format!(
                    "tensor `{name}` does not fit where this safetensors header says it lies (its shape or offsets \
                     are inconsistent); the file is damaged or not a safetensors file — download it again"
                ),
                path,
            ));
        }
        expected_start = end;
    }
    Ok(expected_start as u64)
}

fn open(path: &Path) -> Result<std::fs::File> {
    crate::files::refuse_special(path)?;
    std::fs::File::open(path).map_err(|e| file_error(e, "cannot open the file", path))
}

/// A missing weights file, or `doing` failing on it.
fn file_error(e: std::io::Error, doing: &str, path: &Path) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("weights file", path),
        _ => Error::io(doing, e, path),
    }
}

/// The JSON header of an open safetensors file (after its 8-byte length), leaving the file at the
/// first tensor's bytes.
fn read_header_bytes(file: &mut impl std::io::Read, file_len: u64, path: &Path) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| Error::bad_file("this file is too short to be a safetensors file", path))?;
    let len = u64::from_le_bytes(len);
    if len > file_len.saturating_sub(8) {
        return Err(Error::bad_file("the safetensors header is cut short; the file is truncated", path));
    }
    if len > 100_000_000 {
        return Err(Error::bad_file(
            "this is not a safetensors file (its header length is implausible)",
            path,
        ));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| Error::bad_file("the safetensors header is cut short; the file is truncated", path))?;
    Ok(header)
}

/// The bytes of a weights file, with a sentence for a missing or unreadable one.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    crate::files::refuse_special(path)?;
    std::fs::read(path).map_err(|e| file_error(e, "cannot read the weights file", path))
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
    let file = open(path)?;
    let file_len = file.metadata().map_err(|e| Error::io("cannot read the file", e, path))?.len();
    let header = read_header_bytes(&mut std::io::BufReader::new(file), file_len, path)?;
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
    // Easel's own reader: candle's trusted declared sizes, so a tiny hostile file could abort us.
    let entries = super::pickle::read_torch_checkpoint(path).map_err(|e| match e {
        Error::BadFile { message, .. } => refuse(message),
        other => other,
    })?;
    if entries.is_empty() {
        return Err(refuse("no tensors were found in it".into()));
    }
    Ok(entries)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path) {
        let f32s: Vec<u8> = [1.5f32, -2.25, 3.0, 0.125].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16s: Vec<u8> =
            [0.5f32, 8.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let ids: Vec<u8> = [7i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = [
            ("a.weight", safetensors::Dtype::F32, vec![2, 2], &f32s),
            ("b.weight", safetensors::Dtype::F16, vec![2], &f16s),
            ("c.ids", safetensors::Dtype::I64, vec![2], &ids),
        ]
        .map(|(name, dtype, shape, bytes)| {
            (name.to_string(), safetensors::tensor::TensorView::new(dtype, shape, bytes).expect("view"))
        });
        safetensors::serialize_to_file(views, None, path).expect("written");
    }

    #[test]
    fn tensors_are_read_one_by_one_selected_and_converted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("temp dir", e, Path::new(".")))?;
        let path = dir.path().join("w.safetensors");
        write(&path);
        let all = read_safetensors(&path)?;
        assert_eq!(all["a.weight"].dtype(), DType::F32);
        assert_eq!(all["a.weight"].flatten_all()?.to_vec1::<f32>()?, vec![1.5, -2.25, 3.0, 0.125]);
        assert_eq!(all["b.weight"].dtype(), DType::F16);
        assert_eq!(all["c.ids"].to_vec1::<i64>()?, vec![7, 9]);

        let some = read_safetensors_selected(&path, Some(DType::F16), &|name| name != "b.weight")?;
        let mut names: Vec<_> = some.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["a.weight", "c.ids"]);
        assert_eq!(some["a.weight"].dtype(), DType::F16, "floats arrive in the compute dtype");
        assert_eq!(some["c.ids"].dtype(), DType::I64, "integer tensors keep their type");
        Ok(())
    }

    #[test]
    fn a_cut_file_is_named_as_truncated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.safetensors");
        write(&path);
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let err = read_safetensors(&path).expect_err("cut").to_string();
        assert!(err.contains("truncated") && err.contains("w.safetensors"), "{err}");
        std::fs::write(&path, &bytes[..20]).expect("write");
        assert!(read_safetensors(&path).is_err());
    }
}
