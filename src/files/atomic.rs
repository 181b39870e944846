//! Writing files so that a crash never leaves half of one and nothing is replaced unasked: a
//! temporary file beside the destination, synced, then renamed into place; leftovers of killed
//! runs are swept once per folder.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a crash
/// never leaves a half-written file. Refuses to replace an existing file unless `overwrite`.
pub fn write_atomically(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    check_destination(path, overwrite)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::not_found("output folder", dir));
    }
    clean_stale_temps_once(dir);
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    // A temporary file is private (0600); the finished one should have the mode any other
    // program's output gets, i.e. 0666 less the umask, which the kernel applies at creation.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
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

/// Whether [`write_atomically`] may put a file at `path`: nothing there, or (with `overwrite`) a
/// file or a link, which the rename replaces itself, never what it points to. A folder, a device
/// or a pipe is refused even with `overwrite`: as root, a rename over `/dev/null` replaces it.
/// Callers check their outputs with it before long work, so a refusal comes first.
pub fn check_destination(path: &Path, overwrite: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) if !overwrite => Err(Error::WouldOverwrite { path: path.to_path_buf() }),
        Ok(meta) if !(meta.is_file() || meta.file_type().is_symlink()) => Err(Error::bad_file(
            "this is a folder, a device or a pipe, not a file Easel can replace; choose a file name",
            path,
        )),
        _ => Ok(()),
    }
}

const TEMP_PREFIX: &str = ".easel-";
const TEMP_SUFFIX: &str = ".tmp";

/// Removes temporary files a killed run left in `dir` (at most once per folder and process).
/// Only files older than a few minutes go: a write in progress takes milliseconds, so a
/// younger one may belong to another Easel running now.
fn clean_stale_temps_once(dir: &Path) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static CLEANED: OnceLock<Mutex<HashSet<std::path::PathBuf>>> = OnceLock::new();
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let first =
        CLEANED.get_or_init(Default::default).lock().map(|mut seen| seen.insert(key)).unwrap_or(false);
    if first {
        remove_stale_temps(dir, std::time::Duration::from_secs(600));
    }
}

/// Removes Easel's temporary files in `dir` last modified more than `age` ago; returns how many.
pub fn remove_stale_temps(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        // Nothing is lost if a removal fails: the file was never a finished output.
        if old.is_some_and(|elapsed| elapsed > age) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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

    #[cfg(unix)]
    #[test]
    fn outputs_get_the_umask_mode_not_the_temporary_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.png");
        write_atomically(&path, b"x", false).expect("written");
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        // Linux reports the process's umask; elsewhere only the upper bound can be checked.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let umask =
            status.lines().find_map(|l| l.strip_prefix("Umask:")).map(|m| u32::from_str_radix(m.trim(), 8));
        match umask {
            Some(Ok(umask)) => assert_eq!(mode, 0o666 & !umask, "mode {mode:o} with umask {umask:o}"),
            _ => assert_eq!(mode & !0o666, 0, "{mode:o}"),
        }
    }

    #[test]
    fn stale_temporary_files_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stale = dir.path().join(".easel-abc.tmp");
        let fresh = dir.path().join(".easel-def.tmp");
        let other = dir.path().join("keep.tmp");
        for p in [&stale, &fresh, &other] {
            std::fs::write(p, b"").expect("write");
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for p in [&stale, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(hour_ago))
                .expect("dated");
        }
        assert_eq!(remove_stale_temps(dir.path(), std::time::Duration::from_secs(600)), 1);
        assert!(!stale.exists() && fresh.exists() && other.exists());
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_pipes_are_never_replaced_even_with_overwrite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pipe = dir.path().join("pipe.png");
        let made = std::process::Command::new("mkfifo").arg(&pipe).status().map(|s| s.success());
        if !matches!(made, Ok(true)) {
            return; // No mkfifo on this machine (devices take the same branch; never test on one).
        }
        let err = write_atomically(&pipe, b"x", true).expect_err("a pipe").to_string();
        assert!(err.contains("not a file Easel can replace"), "{err}");
        assert!(std::fs::symlink_metadata(&pipe).is_ok_and(|m| !m.is_file()), "the pipe is still there");
    }
}
