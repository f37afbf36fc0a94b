//! Per-rank shares of the global batch that follow each rank's speed.
//!
//! With equal shares every step waits for the slowest rank (a Pi 3 beside
//! Pi 4s, a Pi 4 that throttles). With [`Balance::Auto`] the ranks measure
//! their compute time per sample and agree (rank 0 decides, all apply) on
//! shares proportional to their throughput, at epoch boundaries or every
//! `every_steps` steps. The gradient of each rank is weighted by its share
//! (see [`grad_scale`]), so the update is the mean over the whole global
//! batch exactly as with equal shares, up to the order of float sums: the
//! optimisation is the same, only who computes what changes.
//!
//! The shares are a function of measured times, so a balanced run is
//! bitwise reproducible for a given sequence of shares (printed in the
//! epoch report, stored in checkpoints), not for a given seed: that is why
//! [`Balance::Off`] is the default.

use std::fmt;

use crate::{Error, Result};

/// How the global batch is split over the ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Equal shares (`global_batch / ranks` each): bitwise reproducible
    /// runs for a seed and world size.
    #[default]
    Off,
    /// Shares follow each rank's measured throughput, re-decided at every
    /// epoch boundary, or every `every_steps` optimiser steps when given.
    Auto {
        /// Steps between decisions (`None`: at the end of each epoch).
        every_steps: Option<u64>,
    },
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::Off => write!(f, "off"),
            Balance::Auto { every_steps: None } => write!(f, "auto"),
            Balance::Auto {
                every_steps: Some(k),
            } => write!(f, "auto every {k} steps"),
        }
    }
}

/// Equal shares of `global` over `ranks` (the caller has checked that the
/// ranks divide it).
pub fn equal_shares(global: usize, ranks: usize) -> Vec<usize> {
    vec![global / ranks; ranks]
}

/// Shares of `global` samples proportional to `throughput` (samples per
/// second of each rank), each at least 1, summing to `global`: largest
/// remainders, ties to the lower rank, so every rank computes the same
/// shares from the same numbers.
///
/// ```
/// use ringsgd::trainer::balanced_shares;
/// // Three ranks at full speed and one at half (ideal 36.6 x 3 + 18.3).
/// assert_eq!(balanced_shares(128, &[100.0, 100.0, 100.0, 50.0])?, vec![37, 36, 36, 19]);
/// assert_eq!(balanced_shares(8, &[1.0, 1.0])?, vec![4, 4]);
/// # Ok::<(), ringsgd::Error>(())
/// ```
///
/// Errors if a throughput is not finite and positive, or `global` is
/// smaller than the number of ranks.
pub fn balanced_shares(global: usize, throughput: &[f64]) -> Result<Vec<usize>> {
    let p = throughput.len();
    if p == 0 || global < p {
        return Err(Error::invalid(format!(
            "cannot share a global batch of {global} over {p} ranks (each needs at least one \
             sample)"
        )));
    }
    if let Some((r, t)) = throughput
        .iter()
        .enumerate()
        .find(|(_, t)| !(t.is_finite() && **t > 0.0))
    {
        return Err(Error::invalid(format!(
            "rank {r}'s measured throughput is {t} samples/s: cannot balance on it"
        )));
    }
    let total: f64 = throughput.iter().sum();
    // One sample each first, the rest in proportion.
    let rest = (global - p) as f64;
    let ideal: Vec<f64> = throughput.iter().map(|t| rest * t / total).collect();
    let mut shares: Vec<usize> = ideal.iter().map(|x| 1 + x.floor() as usize).collect();
    let mut left = global - shares.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..p).collect();
    // Largest fractional part first; equal ones in rank order.
    order.sort_by(|&a, &b| {
        let (fa, fb) = (ideal[a] - ideal[a].floor(), ideal[b] - ideal[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &r in order.iter().cycle() {
        if left == 0 {
            break;
        }
        shares[r] += 1;
        left -= 1;
    }
    Ok(shares)
}

/// The factor by which a rank scales the gradient of the mean loss over
/// its `share` before the mean allreduce over `ranks` ranks, so that the
/// result is the mean over the whole `global` batch: `share * ranks /
/// global` (exactly 1 with equal shares, so an unbalanced run is unchanged
/// bit for bit).
pub fn grad_scale(share: usize, ranks: usize, global: usize) -> f32 {
    if share * ranks == global {
        1.0
    } else {
        (share as f64 * ranks as f64 / global as f64) as f32
    }
}

/// `"37,37,36,18"`.
pub(crate) fn format_shares(shares: &[usize]) -> String {
    shares
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The shares stored by [`format_shares`], checked against the world size
/// and global batch (`None` if they do not fit: another world size).
pub(crate) fn parse_shares(text: &str, ranks: usize, global: usize) -> Option<Vec<usize>> {
    let shares: Vec<usize> = text
        .split(',')
        .map(|s| s.trim().parse().ok())
        .collect::<Option<_>>()?;
    (shares.len() == ranks && shares.iter().sum::<usize>() == global && !shares.contains(&0))
        .then_some(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_batch_and_follow_the_speeds() {
        for (g, t) in [
            (128usize, vec![1.0, 1.0, 1.0, 1.0]),
            (128, vec![3.0, 1.0]),
            (7, vec![1.0, 1.0, 1.0]),
            (4, vec![1000.0, 1.0, 1.0, 1.0]),
            (96, vec![0.3, 0.7, 2.0]),
        ] {
            let s = balanced_shares(g, &t).unwrap();
            assert_eq!(s.iter().sum::<usize>(), g, "{t:?}");
            assert!(s.iter().all(|&x| x >= 1), "{s:?}");
            let total: f64 = t.iter().sum();
            for (x, ti) in s.iter().zip(&t) {
                let ideal = g as f64 * ti / total;
                assert!(
                    (*x as f64 - ideal).abs() <= 1.0 + 1e-9 || *x == 1,
                    "{s:?} vs {t:?}"
                );
            }
        }
        assert_eq!(balanced_shares(128, &[3.0, 1.0]).unwrap(), vec![96, 32]);
        assert_eq!(balanced_shares(128, &[1.0; 4]).unwrap(), vec![32; 4]);
    }

    #[test]
    fn bad_throughputs_are_named() {
        let e = balanced_shares(8, &[1.0, f64::NAN])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 1"), "{e}");
        assert!(balanced_shares(2, &[1.0; 3]).is_err());
    }

    #[test]
    fn scale_is_one_for_equal_shares() {
        assert_eq!(grad_scale(32, 4, 128), 1.0);
        assert_eq!(grad_scale(18, 4, 128), 0.5625);
        assert_eq!(
            parse_shares(&format_shares(&[37, 37, 36, 18]), 4, 128),
            Some(vec![37, 37, 36, 18])
        );
        assert_eq!(parse_shares("64,64", 4, 128), None);
        assert_eq!(parse_shares("128,0", 2, 128), None);
    }
}
