//! Textual-inversion embeddings, found and applied as A1111 does: every `.pt`, `.bin` and
//! `.safetensors` file under the embeddings folder is an embedding named by its file stem, used
//! wherever its name's tokens appear in a prompt (longest name first), its vectors replacing
//! those token slots before the text encoder. Formats: A1111's `.pt` (`string_to_param`, read by
//! Easel's non-executing pickle reader), diffusers' `learned_embeds.bin` (one tensor), kohya /
//! civitai `.safetensors` (`emb_params`), and SDXL's `clip_l` + `clip_g` pairs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::tokenizer::Tokenizer;
use super::weights::TensorMap;
use crate::error::{Error, Result};

/// Embeddings longer than a chunk cannot be placed (A1111 would overflow the chunk).
const MAX_VECTORS: usize = 75;
/// Embedding files are kilobytes; a larger file in the folder is something else.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// One embedding.
#[derive(Debug)]
pub struct Embedding {
    /// The name prompts use (the file stem).
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Vectors for the (first) CLIP text encoder, `[n, width]`, f32 on the CPU.
    pub clip_l: Tensor,
    /// SDXL: vectors for the OpenCLIP bigG encoder, `[n, width]`.
    pub clip_g: Option<Tensor>,
    /// A1111's short hash: the first 12 hex digits of the file's sha256.
    pub hash: String,
}

impl Embedding {
    /// How many token slots it takes.
    pub fn vectors(&self) -> usize {
        self.clip_l.dims().first().copied().unwrap_or(0)
    }

    /// Width of its vectors for the first encoder.
    pub fn width(&self) -> usize {
        self.clip_l.dims().get(1).copied().unwrap_or(0)
    }

    /// What it was made for, in words (from the widths of its vectors).
    pub fn made_for(&self) -> String {
        match (&self.clip_g, self.width()) {
            (Some(_), _) => "SDXL (clip_l and clip_g vectors)".into(),
            (None, 768) => "SD 1.x (768-wide vectors)".into(),
            (None, 1024) => "SD 2.x (1024-wide vectors)".into(),
            (None, w) => format!("a model with {w}-wide text vectors"),
        }
    }

    /// Whether it can serve a model of `family`, as far as its vectors tell (SDXL's come in pairs;
    /// 768 and 1024 wide are SD 1.x's and SD 2.x's; other widths are judged when used).
    pub fn fits(&self, family: super::Family) -> bool {
        use super::Family;
        match (family, &self.clip_g, self.width()) {
            (Family::Sdxl, g, _) => g.is_some(),
            (_, Some(_), _) => false,
            (Family::Sd1, None, w) => w != 1024,
            (Family::Sd2, None, w) => w != 768,
        }
    }

    /// Reads one embedding file; `None` for files that are not embeddings by extension.
    pub fn read(path: &Path) -> Result<Option<Embedding>> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let tensors = match ext.as_deref() {
            Some("safetensors") => super::weights::read_safetensors(path)?,
            Some("pt" | "bin") => super::pickle::read_torch_checkpoint(path)?,
            _ => return Ok(None),
        };
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let (clip_l, clip_g) = vectors_of(tensors).map_err(|detail| {
            Error::bad_file(format!("{detail}; it is not a textual-inversion embedding"), path)
        })?;
        let rows = clip_l.dim(0)?;
        if rows == 0 || rows > MAX_VECTORS {
            return Err(Error::bad_file(
                format!("the embedding has {rows} vectors; embeddings have 1 to {MAX_VECTORS}"),
                path,
            ));
        }
        if let Some(g) = &clip_g {
            if g.dim(0)? != rows {
                return Err(Error::bad_file(
                    format!("its clip_l has {rows} vectors but its clip_g {}", g.dim(0)?),
                    path,
                ));
            }
        }
        let hash = crate::files::sha256_hex(path)
            .map_err(|e| Error::io("cannot read the embedding", e, path))?[..12]
            .to_string();
        Ok(Some(Embedding { name, path: path.to_path_buf(), clip_l, clip_g, hash }))
    }
}

/// The `[n, width]` vectors of an embedding file's tensors, as A1111's
/// `create_embedding_from_data` finds them.
fn vectors_of(mut tensors: TensorMap) -> std::result::Result<(Tensor, Option<Tensor>), String> {
    let as_rows = |t: Tensor| -> std::result::Result<Tensor, String> {
        let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
        match t.rank() {
            1 => t.unsqueeze(0).map_err(|e| e.to_string()),
            2 => Ok(t),
            r => Err(format!("its tensor has {r} dimensions where an embedding has 1 or 2")),
        }
    };
    if let (Some(l), Some(g)) = (tensors.remove("clip_l"), tensors.remove("clip_g")) {
        return Ok((as_rows(l)?, Some(as_rows(g)?)));
    }
    if let Some(t) = tensors.remove("emb_params") {
        return Ok((as_rows(t)?, None));
    }
    match tensors.len() {
        1 => Ok((as_rows(tensors.into_values().next().ok_or("no tensor")?)?, None)),
        0 => Err("it holds no tensor".into()),
        n => Err(format!("it holds {n} tensors and none named emb_params, clip_l or clip_g")),
    }
}

/// Embeddings whose names start with one token: each name's tokens and the embedding.
type Named = Vec<(Vec<u32>, Arc<Embedding>)>;

/// The embeddings of a folder, looked up by the tokens of their names.
#[derive(Default)]
pub struct EmbeddingDb {
    by_first_token: HashMap<u32, Named>,
    all: Vec<Arc<Embedding>>,
    /// Files that could not be read: the name a prompt would use, and why (an error only when a
    /// prompt uses the name).
    pub skipped: Vec<(String, String)>,
}

impl EmbeddingDb {
    /// No embeddings.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every embedding under `dir` (and its subfolders), named for `tokenizer`. A missing folder
    /// holds none; an unreadable file is listed in `skipped`.
    pub fn load(dir: &Path, tokenizer: &Tokenizer) -> Self {
        let mut db = Self::default();
        let mut files = Vec::new();
        collect_files(dir, &mut files, 0);
        files.sort();
        for path in files {
            let too_big = std::fs::metadata(&path).map(|m| m.len() == 0 || m.len() > MAX_FILE_BYTES);
            if too_big.unwrap_or(true) {
                continue;
            }
            match Embedding::read(&path) {
                Ok(Some(e)) => db.insert(Arc::new(e), tokenizer),
                Ok(None) => {}
                Err(e) => {
                    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    db.skipped.push((name, e.to_string()));
                }
            }
        }
        db
    }

    /// Adds one embedding (a later one of the same name replaces the earlier).
    pub fn insert(&mut self, embedding: Arc<Embedding>, tokenizer: &Tokenizer) {
        let ids = tokenizer.tokenize(&embedding.name);
        let Some(&first) = ids.first() else { return };
        self.all.retain(|e| e.name != embedding.name);
        for list in self.by_first_token.values_mut() {
            list.retain(|(_, e)| e.name != embedding.name);
        }
        let list = self.by_first_token.entry(first).or_default();
        list.push((ids, embedding.clone()));
        // Longest names first, so `badhandv4` wins over `badhand`.
        list.sort_by_key(|(ids, _)| std::cmp::Reverse(ids.len()));
        self.all.push(embedding);
        self.all.sort_by_key(|e| e.name.to_lowercase());
    }

    /// The embedding whose name's tokens start at `tokens[pos]`, and how many tokens the name has.
    pub fn find_at(&self, tokens: &[u32], pos: usize) -> Option<(Arc<Embedding>, usize)> {
        let candidates = self.by_first_token.get(tokens.get(pos)?)?;
        candidates
            .iter()
            .find(|(ids, _)| tokens[pos..].starts_with(ids))
            .map(|(ids, e)| (e.clone(), ids.len()))
    }

    /// Every embedding, by name.
    pub fn all(&self) -> &[Arc<Embedding>] {
        &self.all
    }

    /// Why the embedding `text` names (by its tokens, as prompts use names) could not be read, if
    /// `text` names one of the unreadable files.
    pub fn unreadable_in(&self, text: &str, tokenizer: &Tokenizer) -> Option<&str> {
        let tokens = tokenizer.tokenize(text);
        self.skipped.iter().find_map(|(name, why)| {
            let ids = tokenizer.tokenize(name);
            let named = !ids.is_empty() && tokens.windows(ids.len()).any(|w| w == ids.as_slice());
            named.then_some(why.as_str())
        })
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    // A1111 walks subfolders; a link loop must not walk forever.
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() || (t.is_symlink() && path.is_dir()) => collect_files(&path, out, depth + 1),
            Ok(_) if path.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// A1111's `TI hashes` field: `name: hash` for each embedding used, in order of first use.
pub fn ti_hashes(used: &[Arc<Embedding>]) -> String {
    used.iter()
        .map(|e| format!("{}: {}", e.name.replace([':', ','], ""), e.hash))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>)]) {
        let map: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, shape)| {
                let len: usize = shape.iter().product();
                let t = Tensor::from_vec(vec![0.5f32; len], shape.as_slice(), &candle_core::Device::Cpu)
                    .expect("tensor");
                (n.to_string(), t)
            })
            .collect();
        candle_core::safetensors::save(&map, path).expect("save");
    }

    #[test]
    fn damaged_and_foreign_files_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::write(d.join("truncated.pt"), b"PK\x03\x04 not really").expect("write");
        std::fs::write(d.join("notes.txt"), b"not an embedding").expect("write");
        write_safetensors(
            &d.join("three.safetensors"),
            &[("a", vec![1, 8]), ("b", vec![1, 8]), ("c", vec![1, 8])],
        );
        write_safetensors(&d.join("cube.safetensors"), &[("emb_params", vec![2, 2, 8])]);
        write_safetensors(&d.join("huge.safetensors"), &[("emb_params", vec![100, 8])]);
        write_safetensors(&d.join("uneven.safetensors"), &[("clip_l", vec![2, 8]), ("clip_g", vec![3, 16])]);
        write_safetensors(&d.join("good.safetensors"), &[("emb_params", vec![2, 8])]);
        let tok = Tokenizer::bundled(super::super::tokenizer::EOS).expect("tokenizer");
        let db = EmbeddingDb::load(d, &tok);
        let names: Vec<&str> = db.all().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        let skipped: Vec<&str> = db.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(skipped, ["cube", "huge", "three", "truncated", "uneven"]);
        for (name, why) in &db.skipped {
            assert!(why.contains(name.as_str()), "the message names the file: {why}");
        }
        assert!(db.unreadable_in("a photo, (huge:1.2)", &tok).is_some_and(|w| w.contains("100 vectors")));
        assert!(db.unreadable_in("a huger photo", &tok).is_none(), "names match whole tokens");
    }

    #[test]
    fn an_embedding_fits_the_families_its_vectors_belong_to() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_safetensors(&dir.path().join("sd1.safetensors"), &[("emb_params", vec![2, 768])]);
        write_safetensors(
            &dir.path().join("xl.safetensors"),
            &[("clip_l", vec![2, 768]), ("clip_g", vec![2, 1280])],
        );
        let read = |n: &str| Embedding::read(&dir.path().join(n)).expect("reads").expect("an embedding");
        let (sd1, xl) = (read("sd1.safetensors"), read("xl.safetensors"));
        use super::super::Family;
        assert!(sd1.fits(Family::Sd1) && !sd1.fits(Family::Sd2) && !sd1.fits(Family::Sdxl));
        assert!(xl.fits(Family::Sdxl) && !xl.fits(Family::Sd1));
        assert_eq!(xl.made_for(), "SDXL (clip_l and clip_g vectors)");
    }

    #[test]
    fn longer_names_win_and_names_match_by_tokens() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_safetensors(&dir.path().join("badhand.safetensors"), &[("emb_params", vec![1, 8])]);
        write_safetensors(&dir.path().join("badhandv4.safetensors"), &[("emb_params", vec![3, 8])]);
        let tok = Tokenizer::bundled(super::super::tokenizer::EOS).expect("tokenizer");
        let db = EmbeddingDb::load(dir.path(), &tok);
        let tokens = tok.tokenize("(BadHandV4:1.2)");
        let start = tokens.iter().position(|&t| Some(t) != tok.tokenize("(").first().copied()).expect("name");
        let (found, len) = db.find_at(&tokens, start).expect("found");
        assert_eq!((found.name.as_str(), found.vectors()), ("badhandv4", 3));
        assert_eq!(len, tok.tokenize("badhandv4").len());
    }
}
