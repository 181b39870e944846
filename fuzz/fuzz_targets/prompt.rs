//! Any text as a prompt: LoRA tags are parsed or refused with a sentence, stripped, written back,
//! and the rest is tokenized into 75-token chunks, never a panic.
#![no_main]

use std::sync::OnceLock;

use easel::engine::lora::tags;
use easel::engine::tokenizer::{Tokenizer, EOS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    let prompt = String::from_utf8_lossy(data);
    let found = tags::parse_tags(&prompt);
    let stripped = tags::strip_tags(&prompt);
    if let Ok(found) = found {
        for t in &found {
            assert!(tags::is_plain_name(&t.name), "a tag that names a path was accepted: {:?}", t.name);
            let _ = tags::tag(&t.name, t.unet_weight, t.text_weight);
        }
    }
    let tokenizer = TOKENIZER.get_or_init(|| Tokenizer::bundled(EOS).expect("the bundled tokenizer loads"));
    for chunk in tokenizer.encode_chunks(&stripped, 1) {
        assert_eq!(chunk.len(), 77, "every chunk is 77 ids");
    }
});
