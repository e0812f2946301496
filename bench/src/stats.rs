//! Medians and spreads over rounds.

use serde::Serialize;

/// The summary of one cell's samples (one per round).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation), for runs with many rounds.
    pub q1: f64,
    pub q3: f64,
    pub n: usize,
}

/// The `q`-quantile of sorted `v` by linear interpolation.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Summarises the finite samples; `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Summary {
        median: quantile(&v, 0.5),
        min: v[0],
        max: v[v.len() - 1],
        q1: quantile(&v, 0.25),
        q3: quantile(&v, 0.75),
        n: v.len(),
    })
}

/// Per-round ratios `a[i] / b[i]` for the rounds where both sides have a sample: the sides of
/// one round ran back to back, so their ratio cancels slow drifts of the machine.
pub fn paired_ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<f64> {
    a.iter().zip(b).filter_map(|(x, y)| Some(x.as_ref()? / y.as_ref()?)).filter(|r| r.is_finite()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = summarize(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        let s = summarize(&[1.0, 2.0]).unwrap();
        assert_eq!(s.median, 1.5);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn ratios_skip_missing_rounds() {
        let r = paired_ratios(&[Some(4.0), None, Some(9.0)], &[Some(2.0), Some(1.0), Some(3.0)]);
        assert_eq!(r, vec![2.0, 3.0]);
    }
}
