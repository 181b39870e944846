//! A per-picture feature cache on disk, keyed by the picture's bytes, the network weights and the
//! preprocessing, so evaluating a folder again costs only the new or changed pictures.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::resize::ResizeMode;

/// Cached Inception outputs of one picture.
pub struct CachedFeatures {
    /// 2048-d pool features.
    pub pool: Vec<f32>,
    /// 1008 unbiased logits.
    pub logits: Vec<f32>,
}

/// The cache folder and the key part shared by every picture of a run.
pub struct FeatureCache {
    dir: PathBuf,
    salt: String,
}

impl FeatureCache {
    /// A cache under `dir` for these weights (their content hash) and preprocessing.
    pub fn new(dir: PathBuf, weights_hash: &str, mode: ResizeMode) -> Self {
        Self { dir, salt: format!("{weights_hash}-{mode:?}") }
    }

    /// The default folder: `$XDG_CACHE_HOME/easel/features` or `~/.cache/easel/features`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("easel").join("features"))
    }

    fn path_for(&self, picture_bytes: &[u8]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.salt.as_bytes());
        h.update(picture_bytes);
        let key: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join(&key[..2]).join(format!("{key}.f32"))
    }

    /// The cached features of a picture with these bytes, if present and intact.
    pub fn get(&self, picture_bytes: &[u8], dims: (usize, usize)) -> Option<CachedFeatures> {
        let bytes = std::fs::read(self.path_for(picture_bytes)).ok()?;
        if bytes.len() != 4 * (dims.0 + dims.1) {
            return None;
        }
        let values: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some(CachedFeatures { pool: values[..dims.0].to_vec(), logits: values[dims.0..].to_vec() })
    }

    /// Stores features; a failure to write only costs speed next time, so it is ignored.
    pub fn put(&self, picture_bytes: &[u8], features: &CachedFeatures) {
        let path = self.path_for(picture_bytes);
        let Some(parent) = path.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let bytes: Vec<u8> =
            features.pool.iter().chain(&features.logits).flat_map(|v| v.to_le_bytes()).collect();
        let _ = crate::files::write_atomically(&path, &bytes, true);
    }
}
