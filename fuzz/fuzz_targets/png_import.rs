//! Any bytes as a PNG dropped on the studio: the chunk walker and the settings import (Easel's
//! JSON, A1111's text, a ComfyUI graph) answer with settings or a sentence.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = easel::export::png::read_png_text_from(Cursor::new(data)) {
        let _ = easel::export::import::import_texts(text, Path::new("fuzz.png"));
    }
});
