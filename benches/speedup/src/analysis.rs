//! Speedup and efficiency of each measured configuration against the
//! 1-node x 1-core run of the same algorithm.

use std::collections::BTreeMap;

use super::summary::{Measurement, TimingSplit};
use ringsgd::collectives::Algorithm;
use ringsgd::{Error, Result};

/// Images in one epoch of CIFAR-10's training set: the unit of the
/// "time per epoch equivalent" column.
pub const CIFAR10_EPOCH_IMAGES: usize = 50_000;

/// One row of the results table: a measurement and what is derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRow {
    /// The measured configuration.
    pub measurement: Measurement,
    /// Its step split into compute / wait / allreduce / other.
    pub split: TimingSplit,
    /// Time of one epoch equivalent (`epoch_images` images), seconds.
    pub epoch_s: f64,
    /// `global_batch / step`.
    pub images_per_sec: f64,
    /// `step(1 node x 1 core) / step(this)`, same algorithm and global batch;
    /// `None` when that baseline was not measured.
    pub speedup: Option<f64>,
    /// `speedup / (nodes x cores_per_rank)`: the fraction of linear scaling
    /// in the cores used; `None` without a baseline.
    pub efficiency: Option<f64>,
}

impl ScalingRow {
    /// Shorthand for the measurement's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.measurement.algorithm
    }

    /// Shorthand for the measurement's node count.
    pub fn nodes(&self) -> usize {
        self.measurement.nodes
    }

    /// Shorthand for the measurement's cores per rank.
    pub fn cores_per_rank(&self) -> usize {
        self.measurement.cores_per_rank
    }

    /// Nodes x cores per rank.
    pub fn equivalent_cores(&self) -> usize {
        self.measurement.equivalent_cores()
    }
}

/// Derives the table rows, sorted by algorithm, nodes, cores.
///
/// Speedup is at fixed global batch (strong scaling):
/// `S = step_s(1, 1) / step_s(p, c)` against the 1-node x 1-core run of the
/// same algorithm; efficiency is `S / (p c)`. Errors on two measurements of
/// the same configuration, or on global batches that differ within an
/// algorithm (speedup at fixed global batch would be meaningless).
///
/// ```
/// use ringsgd_speedup::{analyse, Algorithm, Measurement, RunSummary};
/// # fn run(ranks: usize, step: f64) -> RunSummary {
/// #   RunSummary { ranks, cores_per_rank: 1, global_batch: 64, steps: 12,
/// #     allreduce: "ring".into(), param_count: 1, grad_bytes: 4, warmup_steps: 2,
/// #     step_s_median: step, compute_s_median: step, allreduce_s_median: 0.0,
/// #     wait_s_median: 0.0, images_per_sec: 64.0 / step, peak_rss_bytes_max: 1,
/// #     total_s: 12.0 * step, per_rank: vec![] }
/// # }
/// let ms = vec![
///     Measurement::new(Algorithm::Ring, 1, 1, run(1, 1.0))?,
///     Measurement::new(Algorithm::Ring, 2, 1, run(2, 0.625))?,
/// ];
/// let rows = analyse(&ms, 50_000)?;
/// assert_eq!(rows[1].speedup, Some(1.6));
/// assert_eq!(rows[1].efficiency, Some(0.8));
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn analyse(measurements: &[Measurement], epoch_images: usize) -> Result<Vec<ScalingRow>> {
    if epoch_images == 0 {
        return Err(Error::invalid("epoch_images must be >= 1"));
    }
    let mut by_config: BTreeMap<(Algorithm, usize, usize), &Measurement> = BTreeMap::new();
    let mut batch: BTreeMap<Algorithm, usize> = BTreeMap::new();
    for m in measurements {
        let key = (m.algorithm, m.nodes, m.cores_per_rank);
        if by_config.insert(key, m).is_some() {
            return Err(Error::invalid(format!(
                "two measurements of {} at {} nodes x {} cores",
                m.algorithm, m.nodes, m.cores_per_rank
            )));
        }
        let b = *batch.entry(m.algorithm).or_insert(m.summary.global_batch);
        if b != m.summary.global_batch {
            return Err(Error::invalid(format!(
                "{} runs use different global batches ({b} and {}); speedup needs one",
                m.algorithm, m.summary.global_batch
            )));
        }
    }
    let rows = by_config
        .values()
        .map(|m| {
            let baseline = by_config
                .get(&(m.algorithm, 1, 1))
                .map(|b| b.summary.step_s_median);
            let speedup = baseline.map(|b| b / m.summary.step_s_median);
            ScalingRow {
                measurement: (*m).clone(),
                split: m.split(),
                epoch_s: m.epoch_s(epoch_images),
                images_per_sec: m.images_per_sec(),
                speedup,
                efficiency: speedup.map(|s| s / m.equivalent_cores() as f64),
            }
        })
        .collect();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::super::summary::tests::summary;
    use super::*;

    fn m(alg: Algorithm, p: usize, c: usize, step: f64) -> Measurement {
        Measurement::new(alg, p, c, summary(alg, p, c, step, step * 0.8, 0.0, 0.0)).unwrap()
    }

    #[test]
    fn speedup_and_efficiency_against_same_algorithm_baseline() {
        let ms = vec![
            m(Algorithm::Naive, 2, 1, 2.0),
            m(Algorithm::Ring, 2, 1, 0.5),
            m(Algorithm::Ring, 1, 1, 0.8),
            m(Algorithm::Ring, 1, 2, 0.5),
            m(Algorithm::Naive, 1, 1, 1.0),
        ];
        let rows = analyse(&ms, 64).unwrap();
        let keys: Vec<_> = rows
            .iter()
            .map(|r| (r.algorithm(), r.nodes(), r.cores_per_rank()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (Algorithm::Ring, 1, 1),
                (Algorithm::Ring, 1, 2),
                (Algorithm::Ring, 2, 1),
                (Algorithm::Naive, 1, 1),
                (Algorithm::Naive, 2, 1)
            ]
        );
        assert_eq!(rows[0].speedup, Some(1.0));
        assert_eq!(rows[1].speedup, Some(1.6));
        assert_eq!(rows[1].efficiency, Some(0.8));
        assert_eq!(rows[2].speedup, Some(1.6));
        assert_eq!(rows[4].speedup, Some(0.5));
        assert_eq!(rows[4].efficiency, Some(0.25));
        // Epoch of 64 images at batch 64 is one step.
        assert_eq!(rows[2].epoch_s, 0.5);
        assert_eq!(rows[2].images_per_sec, 128.0);
    }

    #[test]
    fn missing_baseline_gives_none() {
        let rows = analyse(&[m(Algorithm::Mpi, 2, 1, 1.0)], 100).unwrap();
        assert_eq!(rows[0].speedup, None);
        assert_eq!(rows[0].efficiency, None);
    }

    #[test]
    fn duplicates_and_mixed_batches_are_errors() {
        let err = analyse(
            &[m(Algorithm::Ring, 1, 1, 1.0), m(Algorithm::Ring, 1, 1, 1.1)],
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("two measurements of ring"), "{err}");
        let mut other = m(Algorithm::Ring, 2, 1, 1.0);
        other.summary.global_batch = 32;
        let err = analyse(&[m(Algorithm::Ring, 1, 1, 1.0), other], 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("global batches"), "{err}");
    }
}
