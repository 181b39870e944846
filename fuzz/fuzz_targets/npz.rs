//! Any bytes as pytorch-fid statistics (`.npz`): the archive, the `.npy` headers and the shapes
//! are checked before anything is allocated; the answer is statistics or a sentence.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = easel::metrics::npz::parse_npz(data, &["mu", "sigma"]);
    let _ = easel::metrics::fid::Statistics::parse_npz(data);
});
