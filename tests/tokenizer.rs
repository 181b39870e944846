//! The tokenizer gives HF CLIPTokenizer's ids (transformers 5.24, recorded by
//! tests/fixtures/make_fixtures.py) on awkward prompts, from the model folder's vocabulary and from
//! the vocabulary bundled for single-file checkpoints.

use easel::engine::tokenizer::{Tokenizer, EOS};

mod common;

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(common::fixtures().join("tokenizer_cases.json")).expect("fixture");
    serde_json::from_str(&text).expect("valid fixture")
}

fn check(tok: &Tokenizer) {
    let cases = cases();
    assert!(cases.len() >= 30, "at least 30 prompts");
    for case in &cases {
        assert_eq!(tok.encode(&case.prompt), case.ids, "prompt {:?}", case.prompt);
    }
}

#[test]
fn folder_tokenizer_matches_hf() {
    check(&Tokenizer::from_folder(&common::fixtures().join("tiny-sd/tokenizer")).expect("loads"));
}

#[test]
fn bundled_tokenizer_matches_hf() {
    check(&Tokenizer::bundled(EOS).expect("loads"));
}

#[test]
fn over_long_prompts_keep_every_token_in_chunks() {
    use easel::engine::embeddings::EmbeddingDb;
    use easel::engine::prompt::{chunks::chunks, Segment};
    let tok = Tokenizer::bundled(EOS).expect("loads");
    for case in cases().iter().filter(|c| c.ids.len() > 77) {
        let (found, _) = chunks(&[Segment::Text(case.prompt.clone(), 1.0)], &tok, &EmbeddingDb::empty());
        let kept: Vec<u32> =
            found.iter().flat_map(|c| c.tokens[1..].iter().copied().take_while(|&t| t != EOS)).collect();
        assert_eq!(kept, case.ids[1..case.ids.len() - 1], "prompt {:?}", case.prompt);
    }
}
