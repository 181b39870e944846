//! Files, below every other module: writing atomically (`atomic`), hashing, and guards for
//! reading files from outside — the small text files that come with models and jobs (configs,
//! tokenizer files, presets, prompt lists) are read with a size limit, since a config is
//! kilobytes and a file of gigabytes where one is expected is a mistake or an attack; and what is
//! not a regular file (a pipe, a device) is refused before anything reads it.

mod atomic;

pub use atomic::{check_destination, remove_stale_temps, write_atomically};

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Refuses what is not a regular file or a folder (after links): reading a pipe blocks until
/// something writes to it, and a device such as `/dev/zero` never ends.
pub fn refuse_special(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => {
            Err(Error::bad_file("this is a device or a pipe, not a file; choose the file itself", path))
        }
        _ => Ok(()),
    }
}

/// sha256 of a file, hex.
pub fn sha256_hex(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The largest text file read as a whole: CLIP's `vocab.json` is about 1 MB and a COCO caption
/// list a few MB.
pub const MAX_TEXT_FILE_BYTES: u64 = 64 << 20;

/// The text of `path`, refusing a file larger than [`MAX_TEXT_FILE_BYTES`] with an
/// `InvalidData` error that says so (callers add what the file was for and its path).
pub fn read_text(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    // One byte past the limit tells a file at the limit from a larger one, without reading it all.
    file.take(MAX_TEXT_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TEXT_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than the {} MB a text file of this kind may be", MAX_TEXT_FILE_BYTES >> 20),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_and_huge_ones_refused_unread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let small = dir.path().join("config.json");
        std::fs::write(&small, "{}").expect("write");
        assert_eq!(read_text(&small).expect("read"), "{}");
        let huge = dir.path().join("model_index.json");
        // Sparse: no disk is used, and reading it whole would take 3 GB.
        std::fs::File::create(&huge).and_then(|f| f.set_len(3 << 30)).expect("sparse file");
        let err = read_text(&huge).expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("64 MB"), "{err}");
    }
}
