//! NumPy's legacy `RandomState(seed)` permutation, which torch-fidelity uses to shuffle features for
//! the Inception Score and to draw KID subsets: MT19937 seeded like PyTorch's, and Fisher–Yates with
//! NumPy's masked rejection sampling, so seeded results equal the reference tool's.

use crate::engine::rng::TorchRng;

/// `numpy.random.RandomState(seed)`'s stream, for permutations.
pub struct LegacyRandomState {
    mt: TorchRng,
}

impl LegacyRandomState {
    /// The state `RandomState(seed)` starts in.
    pub fn new(seed: u32) -> Self {
        Self { mt: TorchRng::new(u64::from(seed)) }
    }

    /// A uniformly drawn integer in [0, max], as NumPy's `random_interval`.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = self.mt.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `rng.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            v.swap(i, j);
        }
        v
    }

    /// `rng.choice(n, k, replace=False)`.
    pub fn choice(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut p = self.permutation(n);
        p.truncate(k);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_numpy() {
        // numpy 2.x: np.random.RandomState(2020).permutation(10)
        assert_eq!(LegacyRandomState::new(2020).permutation(10), vec![2, 4, 9, 1, 5, 7, 6, 3, 8, 0]);
    }
}
