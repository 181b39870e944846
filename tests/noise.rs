//! Easel's seeded noise equals `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`
//! (values recorded by tests/fixtures/make_fixtures.py with torch 2.15).

use easel::engine::rng::TorchRng;

mod common;

#[derive(serde::Deserialize)]
struct Case {
    seed: u64,
    values: Vec<f64>,
    sum: f64,
    len: usize,
}

#[test]
fn seeded_noise_equals_torch_randn() {
    let text = std::fs::read_to_string(common::fixtures().join("randn_cases.json")).expect("fixture");
    let cases: Vec<Case> = serde_json::from_str(&text).expect("valid fixture");
    let mut checked = 0;
    // PyTorch draws fewer than 16 values another way; latents always have more.
    for case in cases.iter().filter(|c| c.len >= 16) {
        let ours = TorchRng::new(case.seed).randn(case.len);
        for (i, (a, b)) in ours.iter().zip(&case.values).enumerate() {
            assert!((f64::from(*a) - b).abs() < 1e-5, "seed {} value {i}: {a} vs {b}", case.seed);
        }
        let sum: f64 = ours.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum - case.sum).abs() < 1e-3 * (case.len as f64).sqrt(),
            "seed {}: sum {sum} vs {}",
            case.seed,
            case.sum
        );
        checked += 1;
    }
    assert!(checked >= 4);
}
