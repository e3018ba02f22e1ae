//! Medians and percentiles of measured samples (nearest-rank, no interpolation: every
//! number reported is one that was measured).

/// The value at percentile `p` (0–100) of `samples`, nearest rank; `None` when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `samples` (the lower middle one for an even count); `None` when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(samples, 50.0)
}

/// `mine / theirs` for every round where both were measured (and the quotient is
/// finite): ratios of values taken side by side, never across rounds.
pub fn paired_ratios(mine: &[Option<f64>], theirs: &[Option<f64>]) -> Vec<f64> {
    mine.iter()
        .zip(theirs)
        .filter_map(|(a, b)| Some(a.as_ref()? / b.as_ref()?))
        .filter(|q| q.is_finite())
        .collect()
}

/// The order `n` cells are measured in during `turn` (a slice of a round, counted over
/// the run): each once, starting one further along each turn, so no cell always goes
/// first or always follows the same one's disturbance.
pub fn turn_order(turn: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (turn + i) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_values_of_the_same_round_only() {
        let mine = [Some(3.0), None, Some(4.0), Some(1.0)];
        let theirs = [Some(2.0), Some(5.0), None, Some(0.0)];
        // Round 2 and 3 lack a side; round 4's quotient is not finite.
        assert_eq!(paired_ratios(&mine, &theirs), vec![1.5]);
        assert!(paired_ratios(&[], &[]).is_empty());
    }

    #[test]
    fn every_turn_visits_every_cell_once_from_a_rotating_start() {
        let turns: Vec<Vec<usize>> = (0..4).map(|t| turn_order(t, 3).collect()).collect();
        assert_eq!(turns, [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]);
    }

    #[test]
    fn nearest_rank_percentiles_are_measured_values() {
        let samples = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&samples), Some(3.0));
        assert_eq!(percentile(&samples, 99.0), Some(5.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(median(&[2.0, 1.0]), Some(1.0));
        assert_eq!(median(&[]), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&hundred, 50.0), Some(50.0));
    }
}
