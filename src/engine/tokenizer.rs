//! The CLIP BPE tokenizer every Stable Diffusion family uses.
//!
//! It follows Hugging Face's `CLIPTokenizer` step by step (NFC, whitespace runs to one space,
//! lowercase, the CLIP split pattern, byte-level symbols, BPE with `</w>` word ends), reading a model
//! folder's `vocab.json` + `merges.txt`, or the merges bundled in Easel for single-file checkpoints,
//! which carry no vocabulary. Prompts are cut into 77-token chunks by `prompt::chunks`, as A1111
//! does, never silently shortened.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// The id of `<|startoftext|>` in the CLIP vocabulary.
pub const BOS: u32 = 49406;
/// The id of `<|endoftext|>` in the CLIP vocabulary.
pub const EOS: u32 = 49407;

/// Words whose byte-pair encoding is remembered (a few MB at most).
const MAX_CACHED_WORDS: usize = 50_000;
/// Positions the text encoder takes, including the start and end tokens.
pub const CONTEXT: usize = 77;
/// Prompt tokens per chunk (the context less the start and end tokens).
pub const CHUNK: usize = CONTEXT - 2;

const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
static BUNDLED_MERGES: &[u8] = include_bytes!("../../assets/clip-merges.txt.gz");

/// A loaded CLIP tokenizer.
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_symbols: [char; 256],
    split: regex::Regex,
    whitespace: regex::Regex,
    pad_id: u32,
    comma_id: Option<u32>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
    /// Token texts by id, built the first time one is asked for.
    texts: std::sync::OnceLock<HashMap<u32, String>>,
}

impl Tokenizer {
    /// The tokenizer of a diffusers `tokenizer/` folder (`vocab.json`, `merges.txt`, and the pad
    /// token from `special_tokens_map.json` or `tokenizer_config.json`).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        let vocab_text = crate::files::read_text(&vocab_path)
            .map_err(|e| Error::io("cannot read the tokenizer vocabulary", e, &vocab_path))?;
        let vocab: HashMap<String, u32> = serde_json::from_str(&vocab_text).map_err(|e| {
            Error::bad_file(
                format!("the tokenizer vocabulary is not a JSON object of token ids ({e})"),
                &vocab_path,
            )
        })?;
        let merges = crate::files::read_text(&merges_path)
            .map_err(|e| Error::io("cannot read the tokenizer merges", e, &merges_path))?;
        let pad_token = read_pad_token(dir).unwrap_or_else(|| "<|endoftext|>".to_string());
        let pad_id = *vocab.get(&pad_token).ok_or_else(|| {
            Error::bad_file(format!("the pad token {pad_token:?} is not in the vocabulary"), &vocab_path)
        })?;
        Self::build(vocab, &merges, pad_id)
    }

    /// The standard CLIP tokenizer bundled with Easel, for checkpoints that carry none.
    /// `pad_id` is 49407 for SD 1.x and 0 (`!`) for SD 2.x's OpenCLIP.
    pub fn bundled(pad_id: u32) -> Result<Self> {
        let mut merges = String::new();
        flate2::read::GzDecoder::new(BUNDLED_MERGES)
            .read_to_string(&mut merges)
            .map_err(|e| Error::io("the bundled CLIP merges are damaged", e, "assets/clip-merges.txt.gz"))?;
        let symbols = byte_symbols_in_vocab_order();
        // OpenAI's construction: byte symbols, the same with `</w>`, every merge, then the specials.
        let mut tokens: Vec<String> = symbols.iter().map(|c| c.to_string()).collect();
        tokens.extend(symbols.iter().map(|c| format!("{c}</w>")));
        tokens.extend(merge_lines(&merges).map(|(a, b)| format!("{a}{b}")));
        tokens.push("<|startoftext|>".into());
        tokens.push("<|endoftext|>".into());
        let vocab = tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
        Self::build(vocab, &merges, pad_id)
    }

    fn build(vocab: HashMap<String, u32>, merges: &str, pad_id: u32) -> Result<Self> {
        let ranks =
            merge_lines(merges).enumerate().map(|(i, (a, b))| ((a.to_string(), b.to_string()), i)).collect();
        let comma_id = vocab.get(",</w>").copied();
        Ok(Self {
            vocab,
            ranks,
            byte_symbols: byte_symbols(),
            split: regex::Regex::new(SPLIT_PATTERN).expect("the CLIP split pattern is valid"),
            whitespace: regex::Regex::new(r"\s+").expect("a valid pattern"),
            pad_id,
            comma_id,
            cache: Mutex::new(HashMap::new()),
            texts: std::sync::OnceLock::new(),
        })
    }

    /// The id used to pad a chunk to 77 positions.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The text a token stands for (`</w>`, the end of a word, shown as a trailing space), for
    /// showing how a prompt was read.
    pub fn token_text(&self, id: u32) -> String {
        let texts = self.texts.get_or_init(|| {
            let mut bytes_of: HashMap<char, u8> = HashMap::new();
            for (b, c) in self.byte_symbols.iter().enumerate() {
                bytes_of.insert(*c, b as u8);
            }
            self.vocab
                .iter()
                .map(|(token, &id)| {
                    let (stem, end) = match token.strip_suffix("</w>") {
                        Some(stem) => (stem, " "),
                        None => (token.as_str(), ""),
                    };
                    let text = if token.starts_with("<|") {
                        token.clone()
                    } else {
                        let raw: Vec<u8> = stem.chars().filter_map(|c| bytes_of.get(&c).copied()).collect();
                        format!("{}{end}", String::from_utf8_lossy(&raw))
                    };
                    (id, text)
                })
                .collect()
        });
        texts.get(&id).cloned().unwrap_or_else(|| format!("<{id}>"))
    }

    /// The id of `,` (A1111 ends full chunks at a late comma).
    pub fn comma_id(&self) -> Option<u32> {
        self.comma_id
    }

    /// The prompt's token ids without start or end tokens.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let normalized: String = text.nfc().collect();
        let normalized = self.whitespace.replace_all(&normalized, " ");
        let lowered: String = normalized.chars().flat_map(char::to_lowercase).collect();
        let mut ids = Vec::new();
        for piece in self.split.find_iter(&lowered) {
            let word: String = piece.as_str().bytes().map(|b| self.byte_symbols[b as usize]).collect();
            ids.extend(self.bpe_ids(&word));
        }
        ids
    }

    /// What HF `CLIPTokenizer(text).input_ids` gives: start, the tokens, end; no truncation.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![BOS];
        ids.extend(self.tokenize(text));
        ids.push(EOS);
        ids
    }

    fn bpe_ids(&self, word: &str) -> Vec<u32> {
        if let Some(ids) = self.cache.lock().ok().and_then(|c| c.get(word).cloned()) {
            return ids;
        }
        let mut symbols: Vec<String> = word.chars().map(|c| c.to_string()).collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str("</w>");
        }
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0].clone(), w[1].clone())).map(|&rank| (rank, i)))
                .min();
            let Some((rank, _)) = best else { break };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len()
                    && self.ranks.get(&(symbols[i].clone(), symbols[i + 1].clone())) == Some(&rank)
                {
                    merged.push(format!("{}{}", symbols[i], symbols[i + 1]));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        // Every byte symbol is in the vocabulary, so a miss can only come from a damaged vocab.
        let ids: Vec<u32> = symbols.iter().map(|s| self.vocab.get(s).copied().unwrap_or(EOS)).collect();
        if let Ok(mut cache) = self.cache.lock() {
            // Prompts reuse a few thousand words; a pasted wall of random text must not make the
            // cache grow for as long as the studio runs, so it starts over past a bound.
            if cache.len() >= MAX_CACHED_WORDS {
                cache.clear();
            }
            cache.insert(word.to_string(), ids.clone());
        }
        ids
    }
}

fn merge_lines(merges: &str) -> impl Iterator<Item = (&str, &str)> {
    merges
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' '))
}

fn read_pad_token(dir: &Path) -> Option<String> {
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(text) = crate::files::read_text(&dir.join(name)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match json.get("pad_token") {
            Some(serde_json::Value::String(s)) => return Some(s.clone()),
            Some(obj) => {
                if let Some(s) = obj.get("content").and_then(|c| c.as_str()) {
                    return Some(s.to_string());
                }
            }
            None => {}
        }
    }
    None
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_symbols() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    for b in 0..256u32 {
        let code = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(code).expect("a valid code point");
    }
    table
}

/// Byte symbols in GPT-2's vocabulary order (printable bytes first), as OpenAI's CLIP lists them.
fn byte_symbols_in_vocab_order() -> Vec<char> {
    let table = byte_symbols();
    let mut order: Vec<u32> = (0..256).collect();
    order.sort_by_key(|&b| table[b as usize] as u32);
    order.into_iter().map(|b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_tokenizer_gives_known_ids() {
        let tok = Tokenizer::bundled(EOS).expect("bundled tokenizer");
        assert_eq!(tok.encode("a photo of a cat"), vec![49406, 320, 1125, 539, 320, 2368, 49407]);
    }

    #[test]
    fn vocab_order_starts_with_printable_bytes() {
        let order = byte_symbols_in_vocab_order();
        assert_eq!(order[0], '!');
        assert_eq!(order[64], 'a');
    }
}
