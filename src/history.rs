//! The gallery's history: every finished picture with what made it, kept in `history.json` beside
//! the PNGs so the studio shows the same gallery after a restart. The PNGs carry their parameters
//! too, so a damaged index costs the order and timings, never the pictures.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{GenerationRequest, Timings};
use crate::error::{Error, Result};
use crate::files::write_atomically;

/// One finished picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Unique within the history; also keys the picture's texture.
    pub id: u64,
    /// The PNG in the gallery folder.
    pub path: PathBuf,
    /// The request for exactly this picture (its own seed, batch 1).
    pub request: GenerationRequest,
    /// The prompt as saved (with LoRA tags).
    pub saved_prompt: String,
    /// The model's display name.
    pub model: String,
    /// Seconds since the Unix epoch when it finished.
    pub created_unix: u64,
    /// Where the time went.
    pub timings: Timings,
}

impl HistoryItem {
    /// Seconds this picture took in all.
    pub fn total_secs(&self) -> f64 {
        self.timings.text_secs + self.timings.denoise_secs + self.timings.decode_secs
    }
}

/// The gallery, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// Every picture.
    pub items: Vec<HistoryItem>,
}

/// Moves a damaged index out of the way and says where it went.
fn set_aside(path: &Path, why: &str) -> Error {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut kept = path.as_os_str().to_owned();
    kept.push(format!(".damaged-{secs}"));
    let kept = PathBuf::from(kept);
    let moved = match std::fs::rename(path, &kept) {
        Ok(()) => format!("it was kept as {}", kept.display()),
        Err(e) => format!("it could not be kept aside ({e}), so it is left in place"),
    };
    Error::bad_file(
        format!("the gallery history is damaged ({why}); {moved}, and the pictures are still in its folder"),
        path,
    )
}

impl History {
    /// Reads the index at `path`; a missing file is an empty history, and entries whose picture
    /// was deleted are dropped. A damaged index is moved aside to `history.json.damaged-<time>`
    /// before anything else happens, so the next save (which starts a fresh index) cannot destroy
    /// what might still be repaired by hand; the error names both files.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(set_aside(path, "it is not text"))
            }
            Err(e) => return Err(Error::io("cannot read the gallery history", e, path)),
        };
        let mut history: History =
            serde_json::from_str(&text).map_err(|e| set_aside(path, &e.to_string()))?;
        history.items.retain(|i| i.path.is_file());
        Ok(history)
    }

    /// Writes the index atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the data folder", e, dir))?;
        }
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomically(path, json.as_bytes(), true)
    }

    /// An id not used yet.
    pub fn next_id(&self) -> u64 {
        self.items.iter().map(|i| i.id + 1).max().unwrap_or(1)
    }

    /// The item with this id.
    pub fn get(&self, id: u64) -> Option<&HistoryItem> {
        self.items.iter().find(|i| i.id == id)
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_forgets_deleted_pictures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kept = dir.path().join("a.png");
        std::fs::write(&kept, b"png").expect("write");
        let item = |id, path: &Path| HistoryItem {
            id,
            path: path.to_path_buf(),
            request: GenerationRequest::default(),
            saved_prompt: String::new(),
            model: "tiny".into(),
            created_unix: 1,
            timings: Timings::default(),
        };
        let history = History { items: vec![item(1, &kept), item(2, &dir.path().join("gone.png"))] };
        let index = dir.path().join("history.json");
        history.save(&index).expect("saves");
        let back = History::load(&index).expect("loads");
        assert_eq!(back.items, vec![item(1, &kept)]);
        assert_eq!(back.next_id(), 2);
    }

    #[test]
    fn damaged_index_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = dir.path().join("history.json");
        std::fs::write(&index, b"{not json").expect("write");
        let msg = History::load(&index).expect_err("refused").to_string();
        assert!(msg.contains("damaged") && msg.contains("history.json"), "{msg}");
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .expect("listed")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(kept.len() == 1 && kept[0].starts_with("history.json.damaged-"), "{kept:?}");
        assert!(msg.contains(&kept[0]), "the message says where it went: {msg}");
        assert_eq!(std::fs::read(dir.path().join(&kept[0])).expect("kept"), b"{not json");
        History::default().save(&index).expect("a fresh index is written beside it");
    }
}
