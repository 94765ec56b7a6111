//! Medians, the ratios the benchmarks print and the order peers run in each round.

/// Median of `v` (mean of the two middle values for even lengths); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Ratio formatted to two decimals, or "n/a".
pub fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && ours.is_finite() && theirs.is_finite() {
        format!("{:.2}x", ours / theirs)
    } else {
        "n/a".into()
    }
}

/// The order in which `sides` peers run in round `round`: 0..sides rotated left by `round`, so
/// every peer goes first (and last) equally often and none always runs on a warmer machine.
pub fn rotated(sides: usize, round: usize) -> Vec<usize> {
    (0..sides).map(|i| (i + round) % sides).collect()
}

/// The fewest rounds a comparison may run: with fewer, one disturbed round moves the median.
pub const MIN_ROUNDS: usize = 3;

/// Refuses a round count below [`MIN_ROUNDS`].
pub fn check_rounds(runs: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        runs >= MIN_ROUNDS,
        "{runs} rounds asked for: at least {MIN_ROUNDS} are needed for a median"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(ratio(1.0, 2.0), "0.50x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }

    #[test]
    fn rotation() {
        assert_eq!(rotated(2, 0), vec![0, 1]);
        assert_eq!(rotated(2, 1), vec![1, 0]);
        assert_eq!(rotated(3, 2), vec![2, 0, 1]);
    }
}
