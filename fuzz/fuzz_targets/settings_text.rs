//! Text chunks as a PNG could carry them, without the PNG framing (so every execution reaches the
//! parsers): the input is split at NUL bytes into Easel's JSON, A1111's `parameters` and a
//! ComfyUI `prompt` graph.
#![no_main]

use std::path::Path;

use easel::export::png::PngText;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut png = PngText::default();
    for key in ["parameters", "prompt", "easel"] {
        if let Some(value) = parts.next() {
            if !value.is_empty() {
                png.texts.insert(key.to_string(), value.to_string());
            }
        }
    }
    if let Some(parameters) = png.texts.get("parameters") {
        let _ = easel::export::parameters::parse_a1111(parameters).to_request();
    }
    let _ = easel::export::import::import_texts(png, Path::new("fuzz.png"));
});
