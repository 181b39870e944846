//! Any bytes as a PyTorch checkpoint: the pickle machine alone (every opcode sequence, memo
//! tricks included) and the whole `.ckpt` reader (zip archive, storages, tensor views) answer
//! with tensors or a sentence, never by running code or allocating what the file cannot hold.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = easel::engine::pickle::parse_pickle_bytes(data);
    let path = Path::new("fuzz.ckpt");
    let _ = easel::engine::pickle::read_torch_checkpoint_from(Cursor::new(data), data.len() as u64, path);
});
