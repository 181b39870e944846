//! The tiny preview decoder against diffusers' `AutoencoderTiny` (fixtures by
//! tests/fixtures/make_taesd_fixtures.py), from both file layouts users have, in every dtype.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::max_difference;
use easel::engine::device::DeviceChoice;
use easel::engine::tiny_vae::TinyDecoder;
use easel::engine::weights::read_safetensors;

fn device() -> Device {
    let choice: DeviceChoice = common::test_device().parse().expect("a device name");
    choice.open().expect("the test device opens")
}

/// (latents, diffusers' decoded pixels) on the test device.
fn golden() -> (Tensor, Tensor) {
    let cases = read_safetensors(&common::fixtures().join("golden/taesd_cases.safetensors")).expect("golden");
    let on = |name: &str| cases[name].to_device(&device()).expect("to device");
    (on("latents"), on("decoded"))
}

fn decoded_by(path: &Path, dtype: DType) -> Tensor {
    let decoder = TinyDecoder::load(path, &device(), dtype).expect("the decoder loads");
    let (latents, _) = golden();
    decoder
        .decode(&latents.to_dtype(dtype).expect("cast"))
        .expect("decodes")
        .to_dtype(DType::F32)
        .expect("f32")
}

#[test]
fn the_diffusers_folder_decodes_as_diffusers_does() {
    let (_, expected) = golden();
    let ours = decoded_by(&common::fixtures().join("tiny-taesd"), DType::F32);
    assert_eq!(ours.dims(), &[1, 3, 96, 80]);
    let diff = max_difference(&ours, &expected);
    assert!(diff < 1e-4, "largest difference from diffusers: {diff}");
}

#[test]
fn the_original_single_file_gives_the_same_picture() {
    let folder = decoded_by(&common::fixtures().join("tiny-taesd"), DType::F32);
    let single = decoded_by(&common::fixtures().join("tiny-taesd/taesd_decoder.safetensors"), DType::F32);
    assert_eq!(max_difference(&folder, &single), 0.0);
}

#[test]
fn half_precisions_stay_within_their_rounding() {
    let (_, expected) = golden();
    // Outputs span about two units; f16 keeps ~3 decimal digits through 35 layers, bf16 ~2.
    for (dtype, bar) in [(DType::F16, 0.01), (DType::BF16, 0.05)] {
        let ours = decoded_by(&common::fixtures().join("tiny-taesd"), dtype);
        let diff = max_difference(&ours, &expected);
        assert!(diff < bar, "{dtype:?}: largest difference {diff}");
    }
}

#[test]
fn a_file_that_is_no_decoder_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A full SD checkpoint is the likeliest wrong pick.
    let err = TinyDecoder::load(&common::fixtures().join("tiny-sd.safetensors"), &Device::Cpu, DType::F32)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a TAESD decoder") && err.contains("tiny-sd.safetensors"), "{err}");
    let missing = dir.path().join("nothing");
    let err = TinyDecoder::load(&missing, &Device::Cpu, DType::F32).err().expect("refused").to_string();
    assert!(err.contains("not found") && err.contains("nothing"), "{err}");
    // A folder without weights.
    std::fs::copy(common::fixtures().join("tiny-taesd/config.json"), dir.path().join("config.json"))
        .expect("copy");
    let err = TinyDecoder::load(dir.path(), &Device::Cpu, DType::F32).err().expect("refused").to_string();
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
}
