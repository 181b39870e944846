//! The token counter beside each prompt, as A1111 shows it ("12/75"): the prompt's tokens as the
//! text encoder will see them (emphasis brackets and LoRA tags taken out, `BREAK` padding its chunk,
//! an embedding counting its vectors, the longest text of a prompt-editing schedule), over the
//! length of the chunks they fill. Counted again only when the prompt or its settings change.

use super::prompt_options::EmbeddingList;
use crate::engine::embeddings::EmbeddingDb;
use crate::engine::prompt::chunks::chunks;
use crate::engine::prompt::{composable_parts, schedule::schedule, Emphasis};
use crate::engine::tokenizer::{Tokenizer, CHUNK};

/// What a count was made from.
struct Key {
    text: String,
    emphasis: Emphasis,
    steps: usize,
    embeddings: u64,
}

/// A1111's count for one prompt field, kept until what it was made from changes.
#[derive(Default)]
pub struct TokenCounter {
    last: Option<(Key, String)>,
}

impl TokenCounter {
    /// "tokens/capacity" for `text`, e.g. "12/75" or "80/150", with `list`'s embeddings.
    pub fn count(
        &mut self,
        text: &str,
        emphasis: Emphasis,
        steps: usize,
        list: &mut EmbeddingList,
    ) -> String {
        let embeddings = list.generation();
        if let Some((k, shown)) = &self.last {
            // Every frame asks; only a changed prompt or setting is counted again.
            if k.text == text && k.emphasis == emphasis && k.steps == steps && k.embeddings == embeddings {
                return shown.clone();
            }
        }
        let key = Key { text: text.to_string(), emphasis, steps, embeddings };
        list.tokenizer();
        let (Some(tokenizer), db) = list.parts() else { return String::new() };
        let shown = count_tokens(text, emphasis, steps, tokenizer, db);
        self.last = Some((key, shown.clone()));
        shown
    }
}

/// The largest count over `text`'s `AND` parts and editing schedule, over its chunks' capacity.
pub fn count_tokens(
    text: &str,
    emphasis: Emphasis,
    steps: usize,
    tokenizer: &Tokenizer,
    db: &EmbeddingDb,
) -> String {
    let stripped = crate::engine::lora::tags::strip_tags(text);
    let mut most = 0;
    for (part, _) in composable_parts(&stripped) {
        for (_, edited) in schedule(&part, steps.max(1)) {
            most = most.max(chunks(&emphasis.parse(&edited), tokenizer, db).1);
        }
    }
    let capacity = most.max(1).div_ceil(CHUNK) * CHUNK;
    format!("{most}/{capacity}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tokenizer::EOS;

    #[test]
    fn counts_as_a1111_shows_them() {
        let tok = Tokenizer::bundled(EOS).expect("tokenizer");
        let db = EmbeddingDb::empty();
        assert_eq!(count_tokens("", Emphasis::Original, 20, &tok, &db), "0/75");
        assert_eq!(count_tokens("a (red:1.3) cat <lora:ink:0.5>", Emphasis::Original, 20, &tok, &db), "3/75");
        assert_eq!(count_tokens("a cat BREAK a dog", Emphasis::Original, 20, &tok, &db), "77/150");
        assert_eq!(count_tokens("a [cat:big brown dog:5]", Emphasis::Original, 20, &tok, &db), "4/75");
    }
}
