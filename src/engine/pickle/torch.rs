//! The tensors of a `torch.save` file, read from its parsed pickle: the zip archives torch writes
//! since 1.6 (`<archive>/data.pkl` beside one `<archive>/data/<key>` entry per storage) and the
//! older single-stream ("legacy") files. Every size the pickle declares is checked against the
//! bytes really there before anything is allocated, and each storage is read once however many
//! tensors view it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{parse, Pickle, Res, Value, MAX_PICKLE_BYTES};
use crate::engine::weights::TensorMap;
use crate::error::{Error, Result};

/// The number that opens a legacy torch.save file, as LONG1's little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The most tensors one checkpoint may name (an SDXL checkpoint with EMA weights has about 5 000);
/// millions of names for one storage made millions of tensors.
const MAX_TENSORS: usize = 200_000;
/// Deflate never expands data more than about 1032 times; a zip directory claiming more lies.
const DEFLATE_MAX_RATIO: u64 = 1032;
/// Strided tensors are copied element by element; together the copies may not exceed twice the
/// file (or this), so thousands of views of one storage cannot multiply it.
const MIN_COPY_BUDGET: u64 = 64 << 20;

/// Reads the tensors of a PyTorch checkpoint without running its pickle: those under a
/// `state_dict` entry when it holds any (Stable Diffusion checkpoints keep them there), else under
/// `string_to_param` (A1111's embeddings), else those at the top level. Tensors come to the CPU in
/// the file's dtype; storage types candle lacks (int8, complex, …) are skipped. A damaged or hostile file is an [`Error::BadFile`] whose message
/// says what is wrong with it.
pub fn read_torch_checkpoint(path: &Path) -> Result<TensorMap> {
    crate::files::refuse_special(path)?;
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("weights file", path),
        _ => Error::io("cannot open the file", e, path),
    })?;
    let len = file.metadata().map_err(|e| Error::io("cannot read the file", e, path))?.len();
    read_torch_checkpoint_from(file, len, path)
}

/// [`read_torch_checkpoint`] on any seekable bytes of length `len` (a file, or a `Cursor` for a
/// fuzzer); `path` only names them in errors.
pub fn read_torch_checkpoint_from<R: Read + Seek>(mut reader: R, len: u64, path: &Path) -> Result<TensorMap> {
    let mut head = [0u8; 4];
    let head_read = reader.read_exact(&mut head).and_then(|()| reader.rewind());
    let result = match (head_read, head) {
        (Ok(()), [b'P', b'K', 3, 4]) => read_zip(reader, len),
        (Ok(()), [0x80, ..]) => read_legacy(reader, len),
        _ => Err("it is neither a torch.save zip archive nor a legacy torch pickle".into()),
    };
    result.map_err(|detail| Error::bad_file(detail, path))
}

fn read_zip<R: Read + Seek>(file: R, file_len: u64) -> Res<TensorMap> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("its zip archive is damaged ({e})"))?;
    // The folder inside the archive is named after the file torch.save first wrote, so it varies.
    let pickle_name = archive
        .file_names()
        .filter_map(|name| name.ok())
        .find(|name| name.ends_with("data.pkl"))
        .map(|name| name.into_owned())
        .ok_or("its zip archive has no data.pkl, so torch.save did not write it")?;
    let prefix = pickle_name.strip_suffix("data.pkl").unwrap_or_default().to_owned();
    if let Ok(entry) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut order = Vec::new();
        entry
            .take(16)
            .read_to_end(&mut order)
            .map_err(|e| format!("its byteorder entry cannot be read ({e})"))?;
        if order.starts_with(b"big") {
            return Err("it was written on a big-endian machine".into());
        }
    }
    let (storages, wanted) = {
        let entry =
            archive.by_name(&pickle_name).map_err(|e| format!("its data.pkl cannot be read ({e})"))?;
        if entry.size() > MAX_PICKLE_BYTES
            || entry.size() > entry.compressed_size().saturating_mul(DEFLATE_MAX_RATIO)
        {
            return Err(format!(
                "its pickle is longer than {} MiB or than its compressed bytes can hold",
                MAX_PICKLE_BYTES >> 20
            ));
        }
        let pickle = parse(&mut BufReader::new(entry))?;
        (storages(&pickle)?, wanted(pickle.root())?)
    };
    let mut copy_budget = file_len.max(MIN_COPY_BUDGET).saturating_mul(2);
    // Deflated storages may each expand 1000-fold; together they may not hold more than a few
    // times the file (torch.save stores them uncompressed), or a 2 MB file fills gigabytes.
    let mut inflate_budget = file_len.max(MIN_COPY_BUDGET).saturating_mul(4);
    let tensor_count: usize = wanted.values().map(Vec::len).sum();
    if tensor_count > MAX_TENSORS {
        return Err(format!("it names {tensor_count} tensors, more than the {MAX_TENSORS} of any model"));
    }
    let mut tensors = TensorMap::new();
    for (key, views) in wanted {
        let storage = declared(&storages, &key)?;
        let Some(dtype) = storage.dtype else { continue };
        let counts = views.iter().map(|(name, view)| check(name, view, storage)).collect::<Res<Vec<_>>>()?;
        let len = storage.bytes(&key)?;
        let entry = archive
            .by_name(&format!("{prefix}data/{key}"))
            .map_err(|_| format!("the data of storage `{key}` is missing from its archive"))?;
        if entry.size() != len as u64 {
            return Err(format!(
                "storage `{key}` declares {} elements ({len} bytes) but its data holds {} bytes",
                storage.numel,
                entry.size()
            ));
        }
        let packed = entry.compressed_size();
        let plausible = packed <= file_len
            && match entry.compression() {
                zip::CompressionMethod::Stored => packed == entry.size(),
                _ => entry.size() <= packed.saturating_mul(DEFLATE_MAX_RATIO),
            };
        if !plausible {
            return Err(format!(
                "its zip directory claims more data for storage `{key}` than the file holds"
            ));
        }
        inflate_budget = inflate_budget
            .checked_sub(entry.size())
            .ok_or("its storages would inflate to far more than the file's size")?;
        let bytes = read_exactly(entry, len).map_err(|e| format!("the data of storage `{key}` {e}"))?;
        build(views, &counts, &bytes, dtype, storage, &mut copy_budget, &mut tensors)?;
    }
    Ok(tensors)
}

/// Files from torch before 1.6: five pickles (magic number, protocol, system info, the object, the
/// storage keys), then each storage as its element count and raw little-endian bytes.
fn read_legacy<R: Read + Seek>(file: R, file_len: u64) -> Res<TensorMap> {
    let mut r = BufReader::new(file);
    let magic = parse(&mut r)?;
    if !matches!(magic.root(), Value::BigInt(bytes) if **bytes == LEGACY_MAGIC) {
        return Err("it is a pickle, but not one torch.save wrote".into());
    }
    if parse(&mut r)?.root().as_int() != Some(1001) {
        return Err("it was written by a torch.save protocol Easel does not know".into());
    }
    if matches!(parse(&mut r)?.root().get("little_endian"), Some(Value::Bool(false))) {
        return Err("it was written on a big-endian machine".into());
    }
    let (storages, mut wanted) = {
        let pickle = parse(&mut r)?;
        (storages(&pickle)?, wanted(pickle.root())?)
    };
    let keys: Option<Vec<String>> = parse(&mut r)?
        .root()
        .items()
        .and_then(|keys| keys.iter().map(|key| key.as_str().map(str::to_owned)).collect());
    let keys = keys.ok_or("its list of storages is malformed")?;
    let tensor_count: usize = wanted.values().map(Vec::len).sum();
    if tensor_count > MAX_TENSORS {
        return Err(format!("it names {tensor_count} tensors, more than the {MAX_TENSORS} of any model"));
    }
    let mut copy_budget = file_len.max(MIN_COPY_BUDGET).saturating_mul(2);
    let mut tensors = TensorMap::new();
    for key in keys {
        let storage = declared(&storages, &key)?;
        let mut count = [0u8; 8];
        r.read_exact(&mut count).map_err(|_| "its tensor data is truncated")?;
        if u64::from_le_bytes(count) != storage.numel as u64 {
            return Err(format!("storage `{key}` has a different size in its pickle than beside its data"));
        }
        let len = storage.bytes(&key)?;
        let position = r.stream_position().map_err(|e| format!("it cannot be read ({e})"))?;
        if len as u64 > file_len.saturating_sub(position) {
            return Err(format!("storage `{key}` declares more data than the file holds; it is truncated"));
        }
        match (wanted.remove(&key), storage.dtype) {
            (Some(views), Some(dtype)) => {
                let counts =
                    views.iter().map(|(name, view)| check(name, view, storage)).collect::<Res<Vec<_>>>()?;
                let bytes =
                    read_exactly(&mut r, len).map_err(|e| format!("the data of storage `{key}` {e}"))?;
                build(views, &counts, &bytes, dtype, storage, &mut copy_budget, &mut tensors)?;
            }
            _ => r.seek_relative(len as i64).map_err(|e| format!("it cannot be read ({e})"))?,
        }
    }
    match wanted.keys().find(|key| storages.get(*key).is_some_and(|s| s.dtype.is_some())) {
        Some(key) => Err(format!("the data of storage `{key}` is missing")),
        None => Ok(tensors),
    }
}

/// What the persistent ids declare about one storage.
#[derive(Clone, Copy, PartialEq)]
struct Storage {
    /// `None` for element types candle lacks; their tensors are skipped.
    dtype: Option<DType>,
    element_size: usize,
    numel: usize,
}

impl Storage {
    fn bytes(&self, key: &str) -> Res<usize> {
        self.numel
            .checked_mul(self.element_size)
            .ok_or_else(|| format!("storage `{key}` declares an impossible size"))
    }
}

/// Torch's storage classes: the candle dtype (if any) and the element size.
fn storage_type(name: &str) -> Option<(Option<DType>, usize)> {
    Some(match name {
        "DoubleStorage" => (Some(DType::F64), 8),
        "FloatStorage" => (Some(DType::F32), 4),
        "HalfStorage" => (Some(DType::F16), 2),
        "BFloat16Storage" => (Some(DType::BF16), 2),
        "LongStorage" => (Some(DType::I64), 8),
        "IntStorage" => (Some(DType::I32), 4),
        "ShortStorage" => (Some(DType::I16), 2),
        "UInt32Storage" => (Some(DType::U32), 4),
        // Bools are bytes of 0 or 1; candle keeps them as u8.
        "ByteStorage" | "BoolStorage" => (Some(DType::U8), 1),
        "Float8_e4m3fnStorage" => (Some(DType::F8E4M3), 1),
        "CharStorage" | "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => (None, 1),
        "Float8_e5m2Storage" | "UntypedStorage" => (None, 1),
        "UInt16Storage" => (None, 2),
        "QInt32Storage" | "ComplexHalfStorage" => (None, 4),
        "ComplexFloatStorage" | "UInt64Storage" => (None, 8),
        "ComplexDoubleStorage" => (None, 16),
        _ => return None,
    })
}

/// Every storage the pickle references, from `('storage', type, key, location, numel[, view])`.
fn storages(pickle: &Pickle) -> Res<HashMap<String, Storage>> {
    let mut table = HashMap::new();
    for id in pickle.persistent_ids() {
        let field = |i| id.item(i);
        let (Some(tag), Some(kind), Some(key), Some(numel)) = (field(0), field(1), field(2), field(4)) else {
            return Err("it references data in a form torch.save does not write".into());
        };
        if tag.as_str() != Some("storage") {
            return Err("it references data in a form torch.save does not write".into());
        }
        if field(5).is_some_and(|view| !matches!(view, Value::None)) {
            return Err("it uses storage views from torch before 1.0, which Easel does not read".into());
        }
        let (module, name) = kind.global().ok_or("a storage has no type")?;
        let (dtype, element_size) = storage_type(name)
            .filter(|_| module == "torch")
            .ok_or_else(|| format!("a storage has the unknown type `{module}.{name}`"))?;
        let key = key.as_str().ok_or("a storage key is not a string")?.to_owned();
        let numel =
            numel.as_int().and_then(|n| usize::try_from(n).ok()).ok_or("a storage has a negative size")?;
        let storage = Storage { dtype, element_size, numel };
        if *table.entry(key.clone()).or_insert(storage) != storage {
            return Err(format!("storage `{key}` is declared twice with different types or sizes"));
        }
    }
    Ok(table)
}

fn declared(storages: &HashMap<String, Storage>, key: &str) -> Res<Storage> {
    storages.get(key).copied().ok_or_else(|| format!("storage `{key}` is used but never declared"))
}

/// Where one tensor lies in its storage, counted in elements.
struct View {
    key: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// The tensors to read, grouped by storage: those of `state_dict` if it has any, else the top
/// level's. Names set twice keep their last value, as in Python.
fn wanted(root: &Value) -> Res<BTreeMap<String, Vec<(String, View)>>> {
    let tensors_in = |dict: &Value| -> Res<HashMap<String, View>> {
        let mut found = HashMap::new();
        for (key, value) in dict.entries().unwrap_or_default() {
            let Some(name) = key.as_str() else { continue };
            let view = match value.call() {
                Some((callable, args)) => {
                    view_of(&callable, &args, 0).map_err(|e| format!("{e} (tensor `{name}`)"))?
                }
                None => None,
            };
            match view {
                Some(view) => found.insert(name.to_owned(), view),
                None => found.remove(name),
            };
        }
        Ok(found)
    };
    // Checkpoints keep their tensors under `state_dict`, A1111's textual-inversion embeddings
    // theirs under `string_to_param`.
    let mut chosen = HashMap::new();
    for key in ["state_dict", "string_to_param"] {
        if chosen.is_empty() {
            if let Some(dict) = root.get(key) {
                chosen = tensors_in(&dict)?;
            }
        }
    }
    if chosen.is_empty() {
        chosen = tensors_in(root)?;
    }
    let mut by_storage: BTreeMap<String, Vec<(String, View)>> = BTreeMap::new();
    for (name, view) in chosen {
        by_storage.entry(view.key.clone()).or_default().push((name, view));
    }
    Ok(by_storage)
}

/// The view a call would rebuild, if it is one of torch's tensor constructors.
fn view_of(callable: &Value, args: &Value, depth: u8) -> Res<Option<View>> {
    let Some((module, name)) = callable.global() else { return Ok(None) };
    let arg = |i| args.item(i);
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            let (Some(storage), Some(offset), Some(size), Some(stride)) = (arg(0), arg(1), arg(2), arg(3))
            else {
                return Err("it is described with too few arguments".into());
            };
            let key = storage.persistent_id().and_then(|id| id.item(2));
            let key = key.as_ref().and_then(Value::as_str).ok_or("its storage is not a storage reference")?;
            let (size, stride) = (dims(&size)?, dims(&stride)?);
            if size.len() != stride.len() {
                return Err("it has a different number of sizes and strides".into());
            }
            Ok(Some(View { key: key.to_owned(), offset: index(&offset)?, size, stride }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") if depth < 4 => {
            match arg(0).and_then(|tensor| tensor.call()) {
                Some((callable, args)) => view_of(&callable, &args, depth + 1),
                None => Ok(None),
            }
        }
        // A tensor subclass: (function, type, args, state); the function and its args make the tensor.
        ("torch._tensor", "_rebuild_from_type_v2") if depth < 4 => match (arg(0), arg(2)) {
            (Some(function), Some(args)) => view_of(&function, &args, depth + 1),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

fn dims(value: &Value) -> Res<Vec<usize>> {
    match value.item_count() {
        Some(n) if n <= 64 => value.items().unwrap_or_default().iter().map(index).collect(),
        _ => Err("its shape is not a tuple of at most 64 sizes".into()),
    }
}

fn index(value: &Value) -> Res<usize> {
    value
        .as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| "it has a negative size or offset".into())
}

/// The element count of `view`, once its shape, strides and offset are known to lie inside its
/// storage, with every product checked.
fn check(name: &str, view: &View, storage: Storage) -> Res<usize> {
    let numel = view.size.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let extent = match numel {
        Some(0) => Some(0),
        _ => view
            .size
            .iter()
            .zip(&view.stride)
            .try_fold(1usize, |end, (&d, &s)| d.checked_sub(1)?.checked_mul(s)?.checked_add(end)),
    };
    match (numel, extent.and_then(|e| e.checked_add(view.offset))) {
        (Some(numel), Some(end)) if end <= storage.numel => Ok(numel),
        _ => Err(format!(
            "tensor `{name}` declares a shape that does not fit in its storage of {} elements",
            storage.numel
        )),
    }
}

/// Exactly `len` bytes: the reservation fails with a sentence rather than aborting when memory is
/// short, and pages are filled only as bytes really arrive.
fn read_exactly(reader: impl Read, len: usize) -> Res<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| format!("needs {len} bytes of memory, which are not free"))?;
    reader.take(len as u64).read_to_end(&mut bytes).map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() != len {
        return Err("is cut short; the file is truncated".into());
    }
    Ok(bytes)
}

/// The tensors viewing one storage. Contiguous views share the storage's tensor (no copy);
/// strided ones are copied out, within `copy_budget` bytes across the file.
fn build(
    views: Vec<(String, View)>,
    counts: &[usize],
    bytes: &[u8],
    dtype: DType,
    storage: Storage,
    copy_budget: &mut u64,
    tensors: &mut TensorMap,
) -> Res<()> {
    let whole = Tensor::from_raw_buffer(bytes, dtype, &[storage.numel], &Device::Cpu)
        .map_err(|e| format!("its storage data cannot be read ({e})"))?;
    for ((name, view), &numel) in views.into_iter().zip(counts) {
        let tensor = if is_contiguous(&view) {
            whole.narrow(0, view.offset, numel).and_then(|t| t.reshape(view.size.as_slice()))
        } else {
            let copy = (numel as u64).saturating_mul(storage.element_size as u64);
            *copy_budget = copy_budget
                .checked_sub(copy)
                .ok_or("its tensors view the same data far more often than a checkpoint does")?;
            let data = gather(bytes, storage.element_size, &view, numel)
                .ok_or_else(|| format!("tensor `{name}` lies outside its storage"))?;
            Tensor::from_raw_buffer(&data, dtype, &view.size, &Device::Cpu)
        };
        let tensor = tensor.map_err(|e| format!("tensor `{name}` cannot be built ({e})"))?;
        tensors.insert(name, tensor);
    }
    Ok(())
}

/// Row-major strides, ignoring dimensions of size one (their stride is arbitrary).
fn is_contiguous(view: &View) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in view.size.iter().zip(&view.stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// The elements of a strided view in row-major order ([`check`] has bounded every index).
fn gather(bytes: &[u8], element_size: usize, view: &View, numel: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(numel.checked_mul(element_size)?);
    let mut index = vec![0usize; view.size.len()];
    for _ in 0..numel {
        let at = index
            .iter()
            .zip(&view.stride)
            .try_fold(view.offset, |at, (i, s)| at.checked_add(i.checked_mul(*s)?))?;
        let start = at.checked_mul(element_size)?;
        out.extend_from_slice(bytes.get(start..start.checked_add(element_size)?)?);
        for (i, &d) in index.iter_mut().zip(&view.size).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
