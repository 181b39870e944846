//! Seeded noise that is the same on every run, thread count and machine.
//!
//! candle's CPU generator cannot be seeded, so Easel owns its generator. It reproduces PyTorch's CPU
//! generator bit for bit (MT19937 seeded like `torch.Generator().manual_seed(seed)`, and the
//! Box–Muller fill `torch.randn` uses for float tensors of 16 or more values), so a seed gives the
//! same starting noise as diffusers run with a CPU generator.

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
    fn same_seed_same_noise() {
        assert_eq!(TorchRng::new(3).randn(100), TorchRng::new(3).randn(100));
        assert_ne!(TorchRng::new(3).randn(100), TorchRng::new(4).randn(100));
    }
}
