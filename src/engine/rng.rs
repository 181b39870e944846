//! Seeded noise that is the same on every run, thread count and machine.
//!
//! candle's CPU generator cannot be seeded, so Easel owns its generators. [`TorchRng`] reproduces
//! PyTorch's CPU generator bit for bit (MT19937 seeded like `torch.Generator().manual_seed(seed)`,
//! and the Box–Muller fill `torch.randn` uses for float tensors of 16 or more values), so a seed
//! gives the same starting noise as diffusers run with a CPU generator. [`PhiloxRng`] gives the
//! numbers `torch.randn` draws on a CUDA device (Philox4x32-10 and one Box–Muller value per
//! counter, as A1111's `rng_philox.py` computes them), so a seed from a picture made on an NVIDIA
//! GPU — A1111's default — gives its noise on any machine.

use serde::{Deserialize, Serialize};

/// Which generator draws a picture's noise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSource {
    /// PyTorch's CPU generator (diffusers with `torch.Generator()`, A1111's "CPU").
    #[default]
    Cpu,
    /// PyTorch's CUDA generator (A1111's default "GPU", and its "NV").
    Gpu,
}

impl NoiseSource {
    /// The command-line name.
    pub fn id(self) -> &'static str {
        match self {
            NoiseSource::Cpu => "cpu",
            NoiseSource::Gpu => "gpu",
        }
    }

    /// The source an A1111 `RNG:` field names ("GPU" when the field is absent).
    pub fn from_a1111(name: &str) -> Option<Self> {
        match name.trim() {
            "CPU" => Some(NoiseSource::Cpu),
            "GPU" | "NV" => Some(NoiseSource::Gpu),
            _ => None,
        }
    }
}

impl std::fmt::Display for NoiseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl std::str::FromStr for NoiseSource {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "cpu" => Ok(NoiseSource::Cpu),
            // A1111's "NV" draws the GPU's numbers on the CPU, as Easel always does.
            "gpu" | "nv" => Ok(NoiseSource::Gpu),
            _ => Err(crate::Error::setting(
                crate::error::Setting::Rng,
                format!("{s:?} is not a noise source; choose cpu or gpu"),
            )),
        }
    }
}

/// One picture's generator, of either source.
#[derive(Clone)]
pub enum ImageRng {
    /// PyTorch's CPU generator.
    Cpu(TorchRng),
    /// PyTorch's CUDA generator.
    Gpu(PhiloxRng),
}

impl ImageRng {
    /// A generator of `source` seeded with `seed`.
    pub fn new(source: NoiseSource, seed: u64) -> Self {
        match source {
            NoiseSource::Cpu => ImageRng::Cpu(TorchRng::new(seed)),
            NoiseSource::Gpu => ImageRng::Gpu(PhiloxRng::new(seed)),
        }
    }

    /// `n` standard normal values, as one `torch.randn` of that many values.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        match self {
            ImageRng::Cpu(r) => r.randn(n),
            ImageRng::Gpu(r) => r.randn(n),
        }
    }
}

/// PyTorch's CUDA normal generator, as A1111's `rng_philox.Generator`: each call draws one value
/// per element from Philox4x32-10 keyed by the seed, with the call count as the counter's offset.
#[derive(Clone)]
pub struct PhiloxRng {
    key: [u32; 2],
    offset: u32,
}

const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

impl PhiloxRng {
    /// A generator in the state `torch.manual_seed(seed)` leaves on a CUDA device.
    pub fn new(seed: u64) -> Self {
        Self { key: [seed as u32, (seed >> 32) as u32], offset: 0 }
    }

    /// `n` standard normal values.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(1);
        // numpy multiplies the uint32 draws by float32 constants in float64, and so does this.
        let inv = f64::from(2.328_306_4e-10f32);
        let inv_2pi = f64::from((2.328_306_4e-10f64 * 6.283_185_5) as f32);
        let half_inv = f64::from(2.328_306_4e-10f32 / 2.0);
        let half_inv_2pi = f64::from(((2.328_306_4e-10f64 * 6.283_185_5) as f32) / 2.0);
        (0..n)
            .map(|i| {
                let [x, y] = philox([offset, 0, i as u32, 0], self.key);
                let u = f64::from(x) * inv + half_inv;
                let v = f64::from(y) * inv_2pi + half_inv_2pi;
                ((-2.0 * u.ln()).sqrt() * v.sin()) as f32
            })
            .collect()
    }
}

/// Ten Philox4x32 rounds; the first two words of the result.
fn philox(mut c: [u32; 4], mut key: [u32; 2]) -> [u32; 2] {
    for round in 0..10 {
        if round > 0 {
            key = [key[0].wrapping_add(PHILOX_W[0]), key[1].wrapping_add(PHILOX_W[1])];
        }
        let v1 = u64::from(c[0]) * u64::from(PHILOX_M[0]);
        let v2 = u64::from(c[2]) * u64::from(PHILOX_M[1]);
        c = [(v2 >> 32) as u32 ^ c[1] ^ key[0], v2 as u32, (v1 >> 32) as u32 ^ c[3] ^ key[1], v1 as u32];
    }
    [c[0], c[1]]
}

/// PyTorch's CPU random engine: MT19937 with PyTorch's seeding and draw order.
#[derive(Clone)]
pub struct TorchRng {
    state: Box<[u32; 624]>,
    next: usize,
}

impl TorchRng {
    /// A generator in the state `torch.Generator().manual_seed(seed)` leaves.
    pub fn new(seed: u64) -> Self {
        let mut state = Box::new([0u32; 624]);
        // PyTorch keeps only the low 32 bits of the seed for MT19937.
        state[0] = seed as u32;
        for j in 1..624 {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Self { state, next: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        let s = &mut self.state;
        for i in 0..624 {
            let y = (s[i] & UPPER) | (s[(i + 1) % 624] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            s[i] = s[(i + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= 624 {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A float in [0, 1) with 24 random bits, as `uniform_real_distribution<float>` draws it.
    fn next_unit_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `n` standard normal values, exactly as `torch.randn(n, generator=g)` fills a float tensor.
    ///
    /// PyTorch only uses this fill for 16 values or more; smaller requests are refused, since a
    /// latent tensor always has more.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        assert!(n >= 16, "randn needs at least 16 values");
        let mut data: Vec<f32> = (0..n).map(|_| self.next_unit_f32()).collect();
        for start in (0..n - 15).step_by(16) {
            box_muller_16(&mut data[start..start + 16]);
        }
        if !n.is_multiple_of(16) {
            // PyTorch redraws the last 16 values when the length is not a multiple of 16.
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.next_unit_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// Turns 16 uniforms into 16 normals: pairs (j, j+8) share one Box–Muller draw.
fn box_muller_16(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0f32 * std::f32::consts::PI * u2;
        data[j] = radius * theta.cos();
        data[j + 8] = radius * theta.sin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The C++ standard requires the 10000th output of mt19937 seeded with 5489 to be 4123659995.
        let mut rng = TorchRng::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn normals_have_unit_moments() {
        let v = TorchRng::new(7).randn(100_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn philox_gives_a1111s_documented_numbers() {
        // rng_philox.py's docstring: Generator(seed=0).randn(shape=(3, 4)).
        let want: [f64; 12] = [
            -0.924_662_59,
            -0.425_344_15,
            -2.643_845_7,
            0.145_183_88,
            -0.120_866_47,
            -0.579_725_64,
            -0.622_851_22,
            -0.328_387_09,
            -1.074_542_31,
            -0.363_144_07,
            -1.671_050_67,
            2.265_504_97,
        ];
        let got = PhiloxRng::new(0).randn(12);
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn same_seed_same_noise() {
        assert_eq!(TorchRng::new(3).randn(100), TorchRng::new(3).randn(100));
        assert_ne!(TorchRng::new(3).randn(100), TorchRng::new(4).randn(100));
    }
}
