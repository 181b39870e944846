//! Any bytes as a safetensors file: the streaming reader the models use, the in-memory one the
//! adapters use, and the header reader `inspect` uses must answer with a value or an error,
//! never a panic or an allocation beyond the input's size.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    // f16, so the conversion runs too.
    let float = Some(candle_core::DType::F16);
    let _ = easel::engine::weights::read_safetensors_from(
        &mut Cursor::new(data),
        data.len() as u64,
        path,
        float,
        &|_| true,
    );
    let _ = easel::engine::weights::parse_safetensors(data, path);
    let _ = easel::engine::weights::header_of(data, path);
    let _ = easel::engine::lora::Adapter::from_bytes(data, path);
});
