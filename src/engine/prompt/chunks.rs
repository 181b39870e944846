//! A prompt's tokens in A1111's 77-token chunks (`tokenize_line` in `sd_hijack_clip.py`): 75
//! tokens framed by start and end, each with the weight of its text; `BREAK` pads the chunk out;
//! when a chunk fills up, the words after its last comma (if it is within 20 tokens of the end)
//! move on to the next; an embedding's vectors take as many slots as it has vectors, never split
//! across chunks.

use std::sync::Arc;

use super::Segment;
use crate::engine::embeddings::{Embedding, EmbeddingDb};
use crate::engine::tokenizer::{Tokenizer, BOS, CHUNK, EOS};

/// A1111's `comma_padding_backtrack` default.
const COMMA_BACKTRACK: usize = 20;

/// One chunk of 77 tokens.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Token ids: start, 75 tokens padded with end tokens, end (`pad_after_end` re-pads).
    pub tokens: Vec<u32>,
    /// The weight of each position (1 for start, end and padding).
    pub weights: Vec<f32>,
    /// Embeddings placed in this chunk: the slot after which their vectors start (0 = the first
    /// token after the start token) and the embedding.
    pub fixes: Vec<(usize, Arc<Embedding>)>,
}

impl Chunk {
    /// The chunk of an empty prompt.
    pub fn empty() -> Self {
        let mut tokens = vec![BOS];
        tokens.resize(CHUNK + 2, EOS);
        Self { tokens, weights: vec![1.0; CHUNK + 2], fixes: Vec::new() }
    }

    /// The token ids with every position after the first end token set to `pad` (OpenCLIP's
    /// padding), as A1111's `process_tokens` does.
    pub fn padded(&self, pad: u32) -> Vec<u32> {
        let mut ids = self.tokens.clone();
        if let Some(end) = ids.iter().position(|&t| t == EOS) {
            for id in &mut ids[end + 1..] {
                *id = pad;
            }
        }
        ids
    }

    /// Whether `other` holds the same tokens and embeddings (whatever their weights), so it
    /// encodes to the same vectors.
    pub fn same_tokens(&self, other: &Chunk) -> bool {
        self.tokens == other.tokens
            && self.fixes.len() == other.fixes.len()
            && self.fixes.iter().zip(&other.fixes).all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }

    /// Whether any position carries a weight other than 1.
    pub fn is_weighted(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// A builder that keeps A1111's state: the chunk being filled and its last comma.
struct Builder {
    chunks: Vec<Chunk>,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    fixes: Vec<(usize, Arc<Embedding>)>,
    last_comma: Option<usize>,
    token_count: usize,
}

impl Builder {
    fn next_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last { self.tokens.len() } else { CHUNK };
        let mut tokens = Vec::with_capacity(CHUNK + 2);
        tokens.push(BOS);
        tokens.append(&mut self.tokens);
        tokens.resize(CHUNK + 1, EOS);
        tokens.push(EOS);
        let mut weights = Vec::with_capacity(CHUNK + 2);
        weights.push(1.0);
        weights.append(&mut self.weights);
        weights.resize(CHUNK + 2, 1.0);
        self.chunks.push(Chunk { tokens, weights, fixes: std::mem::take(&mut self.fixes) });
        self.last_comma = None;
    }
}

/// The chunks of `segments` (already read for emphasis), with `embeddings` found by their names'
/// tokens, and the number of prompt tokens (A1111's count, shown beside the prompt).
pub fn chunks(segments: &[Segment], tokenizer: &Tokenizer, embeddings: &EmbeddingDb) -> (Vec<Chunk>, usize) {
    let comma = tokenizer.comma_id();
    let mut b = Builder {
        chunks: Vec::new(),
        tokens: Vec::new(),
        weights: Vec::new(),
        fixes: Vec::new(),
        last_comma: None,
        token_count: 0,
    };
    for segment in segments {
        let (text, weight) = match segment {
            Segment::Break => {
                b.next_chunk(false);
                continue;
            }
            Segment::Text(text, weight) => (text, *weight as f32),
        };
        let tokens = tokenizer.tokenize(text);
        let mut position = 0;
        while position < tokens.len() {
            let token = tokens[position];
            if Some(token) == comma {
                b.last_comma = Some(b.tokens.len());
            } else if let Some(at) =
                b.last_comma.filter(|&at| b.tokens.len() == CHUNK && CHUNK - at <= COMMA_BACKTRACK)
            {
                // The words after the comma move on to the next chunk.
                let moved_tokens = b.tokens.split_off(at + 1);
                let moved_weights = b.weights.split_off(at + 1);
                b.next_chunk(false);
                b.tokens = moved_tokens;
                b.weights = moved_weights;
            }
            if b.tokens.len() == CHUNK {
                b.next_chunk(false);
            }
            let Some((embedding, name_len)) = embeddings.find_at(&tokens, position) else {
                b.tokens.push(token);
                b.weights.push(weight);
                position += 1;
                continue;
            };
            let vectors = embedding.vectors();
            if b.tokens.len() + vectors > CHUNK {
                b.next_chunk(false);
            }
            b.fixes.push((b.tokens.len(), embedding));
            b.tokens.extend(std::iter::repeat_n(0, vectors));
            b.weights.extend(std::iter::repeat_n(weight, vectors));
            position += name_len;
        }
    }
    if !b.tokens.is_empty() || b.chunks.is_empty() {
        b.next_chunk(true);
    }
    (b.chunks, b.token_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Vec<Chunk> {
        let tok = Tokenizer::bundled(EOS).expect("bundled tokenizer");
        chunks(&[Segment::Text(text.into(), 1.0)], &tok, &EmbeddingDb::empty()).0
    }

    #[test]
    fn long_prompts_are_chunked_not_cut() {
        let found = plain(&"cat ".repeat(160));
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|c| c.tokens.len() == CHUNK + 2 && c.tokens[0] == BOS));
        let cats: usize = found.iter().map(|c| c.tokens.iter().filter(|&&t| t == 2368).count()).sum();
        assert_eq!(cats, 160);
    }

    #[test]
    fn chunks_break_at_a_late_comma() {
        // 70 words, a comma, then 10 more: the first chunk ends right after the comma.
        let found = plain(&format!("{}, {}", "cat ".repeat(70), "dog ".repeat(10)));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].tokens[71], 267, "the comma closes the first chunk");
        assert_eq!(found[0].tokens[72], EOS);
        assert_eq!(found[1].tokens[1..11], [1929; 10]);
    }

    #[test]
    fn openclip_pads_after_the_first_end_token() {
        let chunk = &plain("a cat")[0];
        assert_eq!(chunk.padded(0)[..5], [BOS, 320, 2368, EOS, 0]);
        assert_eq!(chunk.padded(EOS)[4], EOS);
    }
}
