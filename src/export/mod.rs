//! Writing results: PNGs that carry their parameters, written atomically and never over an
//! existing file unless asked.

pub mod import;
pub mod parameters;
pub mod png;

use std::io::Write;
use std::path::Path;

use crate::engine::{GenerationRequest, Timings};
use crate::error::{Error, Result};
use parameters::{to_a1111, Provenance};

/// The text chunks of a generated picture: A1111's `parameters` (with `saved_prompt`, the prompt
/// plus LoRA tags, so other tools rebuild the stack) and Easel's lossless JSON.
pub fn generation_texts(
    request: &GenerationRequest,
    saved_prompt: &str,
    seed: u64,
    provenance: &Provenance,
    timings: &Timings,
) -> Vec<(String, String)> {
    let single = GenerationRequest { seed, batch: 1, ..request.clone() };
    let shown = GenerationRequest { prompt: saved_prompt.to_string(), ..single.clone() };
    let json = serde_json::json!({
        "request": single,
        "model": provenance.model,
        "model_hash": provenance.model_hash,
        "version": provenance.version,
        "timings": timings,
    });
    vec![
        ("parameters".to_string(), to_a1111(&shown, seed, provenance)),
        ("easel".to_string(), json.to_string()),
    ]
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a crash
/// never leaves a half-written file. Refuses to replace an existing file unless `overwrite`.
pub fn write_atomically(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    if !overwrite && path.exists() {
        return Err(Error::WouldOverwrite { path: path.to_path_buf() });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::not_found("output folder", dir));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".easel-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file beside the output", e, dir))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write the output", e, path))?;
    let persisted = if overwrite { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    persisted.map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => Error::WouldOverwrite { path: path.to_path_buf() },
        _ => Error::io("cannot move the finished file into place", e.error, path),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overwrites_without_permission() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.png");
        write_atomically(&path, b"first", false).expect("first write");
        let err = write_atomically(&path, b"second", false).expect_err("refused");
        assert!(matches!(err, Error::WouldOverwrite { .. }));
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        write_atomically(&path, b"third", true).expect("overwrite allowed");
        assert_eq!(std::fs::read(&path).expect("read"), b"third");
        let leftovers = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary files remain");
    }
}
