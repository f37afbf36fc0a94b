//! One measured configuration: the training binary's summary JSON, and the
//! split of a step into compute, waiting, allreduce and the rest.

use std::path::Path;

use ringsgd::collectives::Algorithm;
use ringsgd::{Error, Result};
use serde::{Deserialize, Serialize};

/// Parses an algorithm as the bench's `--algorithms` flag and the summary's
/// `allreduce` field spell it: the library's names (`ring`, `mpi`, `naive`,
/// see [`Algorithm`]'s `FromStr`), case-insensitive and trimmed, and the
/// aliases `native` (= `mpi`), `gather` and `gather-to-root` (= `naive`).
///
/// ```
/// use ringsgd_speedup::{parse_algorithm, Algorithm};
/// assert_eq!(parse_algorithm(" Gather ")?, Algorithm::Naive);
/// assert_eq!(parse_algorithm("native")?, Algorithm::Mpi);
/// assert!(parse_algorithm("tree").is_err());
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn parse_algorithm(s: &str) -> Result<Algorithm> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "native" => Ok(Algorithm::Mpi),
        "gather" | "gather-to-root" => Ok(Algorithm::Naive),
        other => other.parse(),
    }
}

/// A human-readable name of an algorithm for plot legends: `ring`,
/// `MPI native`, `gather-to-root`.
pub fn algorithm_label(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Ring => "ring",
        Algorithm::Mpi => "MPI native",
        Algorithm::Naive => "gather-to-root",
    }
}

/// The JSON object rank 0 of the training binary writes with
/// `--summary-json PATH` (one object; unknown extra fields are ignored).
/// The binary (`examples/cifar10`) writes it by serialising this struct, so
/// writer and reader cannot disagree on a field.
///
/// Times are medians over the steps after `warmup_steps`; for each step the
/// maximum over ranks is taken before the median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// World size (number of ranks, "nodes").
    pub ranks: usize,
    /// Cores (compute threads) per rank.
    pub cores_per_rank: usize,
    /// Images per optimiser step summed over all ranks.
    pub global_batch: usize,
    /// Steps run, warm-up included.
    pub steps: usize,
    /// `--allreduce` value of the run.
    pub allreduce: String,
    /// Number of model parameters.
    pub param_count: u64,
    /// Bytes of gradient averaged per step (`4 * param_count` for f32).
    pub grad_bytes: u64,
    /// Steps excluded from the medians.
    pub warmup_steps: usize,
    /// Median wall time of a whole step, seconds.
    pub step_s_median: f64,
    /// Median forward + backward + optimiser time, seconds.
    pub compute_s_median: f64,
    /// Median time inside the allreduce, seconds.
    pub allreduce_s_median: f64,
    /// Median time blocked in the barrier before the allreduce (load
    /// imbalance), seconds.
    pub wait_s_median: f64,
    /// `global_batch / step_s_median`.
    pub images_per_sec: f64,
    /// Peak resident set size, maximum over ranks, bytes.
    pub peak_rss_bytes_max: u64,
    /// Wall time of the whole run, seconds.
    pub total_s: f64,
    /// Every rank of the last epoch: host, compute, wait, temperature and
    /// clock (absent in summaries written before it existed).
    #[serde(default)]
    pub per_rank: Vec<RankSummary>,
}

/// One rank of a run, so that a user sees which node bent the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankSummary {
    /// The rank.
    pub rank: usize,
    /// Its host.
    pub host: String,
    /// Compute seconds over the last epoch's steps.
    pub compute_s: f64,
    /// Seconds of those steps spent waiting for the others and the network.
    pub waited_s: f64,
    /// Highest CPU temperature, degrees Celsius (if the node exposes it).
    pub temp_c: Option<f32>,
    /// Mean CPU clock while training, MHz (if exposed).
    pub mhz: Option<f32>,
    /// Maximum CPU clock, MHz (if exposed).
    pub max_mhz: Option<f32>,
    /// Whether the node ran below its maximum clock or its firmware reports
    /// throttling.
    pub throttled: bool,
}

impl RankSummary {
    /// One row of the per-rank table (see [`per_rank_markdown`]).
    fn row(&self, m: &Measurement) -> String {
        let opt =
            |v: Option<f32>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.0}{unit}"));
        format!(
            "| {} | {}x{} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |\n",
            m.algorithm.name(),
            m.nodes,
            m.cores_per_rank,
            self.rank,
            self.host,
            self.compute_s,
            self.waited_s,
            opt(self.temp_c, " °C"),
            opt(self.mhz, ""),
            opt(self.max_mhz, ""),
            if self.throttled { "THROTTLED" } else { "" }
        )
    }
}

/// The ranks of every run with more than one rank or with node readings:
/// compute and wait per rank, temperature and clock.
///
/// ```
/// use ringsgd_speedup::{per_rank_markdown, Algorithm, Measurement, RankSummary, RunSummary};
/// # let json = r#"{"ranks":2,"cores_per_rank":1,"global_batch":64,"steps":12,
/// #   "allreduce":"ring","param_count":10,"grad_bytes":40,"warmup_steps":2,
/// #   "step_s_median":0.5,"compute_s_median":0.4,"allreduce_s_median":0.05,
/// #   "wait_s_median":0.02,"images_per_sec":128.0,"peak_rss_bytes_max":1,"total_s":9.0}"#;
/// let mut s = RunSummary::from_json(json, std::path::Path::new("run.json"))?;
/// s.per_rank = vec![RankSummary { rank: 1, host: "pi2".into(), compute_s: 6.1, waited_s: 0.2,
///     temp_c: Some(84.0), mhz: Some(1000.0), max_mhz: Some(1800.0), throttled: true }];
/// let m = Measurement::new(Algorithm::Ring, 2, 1, s)?;
/// let table = per_rank_markdown(&[m]);
/// assert!(table.contains("| ring | 2x1 | 1 | pi2 | 6.10 | 0.20 | 84 °C | 1000 | 1800 | THROTTLED |"));
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn per_rank_markdown(runs: &[Measurement]) -> String {
    let mut out = String::from(
        "| algorithm | nodes x cores | rank | host | compute s | waited s | temperature | MHz | max MHz | |\n\
         |---|---|--:|---|--:|--:|--:|--:|--:|---|\n",
    );
    let mut any = false;
    for m in runs {
        let p = &m.summary.per_rank;
        if p.len() > 1 || p.iter().any(|r| r.temp_c.is_some() || r.mhz.is_some()) {
            for r in p {
                out.push_str(&r.row(m));
                any = true;
            }
        }
    }
    if any {
        out
    } else {
        String::new()
    }
}

impl RunSummary {
    /// Parses and checks a summary; `source` names the file in errors.
    ///
    /// ```
    /// use ringsgd_speedup::RunSummary;
    /// let json = r#"{"ranks":2,"cores_per_rank":1,"global_batch":64,"steps":12,
    ///   "allreduce":"ring","param_count":1116970,"grad_bytes":4467880,"warmup_steps":2,
    ///   "step_s_median":0.5,"compute_s_median":0.4,"allreduce_s_median":0.05,
    ///   "wait_s_median":0.03,"images_per_sec":128.0,"peak_rss_bytes_max":100000000,
    ///   "total_s":7.0}"#;
    /// let s = RunSummary::from_json(json, "summary.json".as_ref())?;
    /// assert_eq!(s.ranks, 2);
    /// # Ok::<(), ringsgd::Error>(())
    /// ```
    pub fn from_json(text: &str, source: &Path) -> Result<Self> {
        let summary: RunSummary = serde_json::from_str(text).map_err(|e| Error::Data {
            file: source.to_path_buf(),
            record: None,
            msg: format!("not a valid run summary: {e}"),
        })?;
        summary.validate().map_err(|msg| Error::Data {
            file: source.to_path_buf(),
            record: None,
            msg,
        })?;
        Ok(summary)
    }

    /// Reads and parses a summary file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.ranks == 0 || self.cores_per_rank == 0 || self.global_batch == 0 {
            return Err("ranks, cores_per_rank and global_batch must be >= 1".into());
        }
        let times = [
            ("step_s_median", self.step_s_median),
            ("compute_s_median", self.compute_s_median),
            ("allreduce_s_median", self.allreduce_s_median),
            ("wait_s_median", self.wait_s_median),
            ("total_s", self.total_s),
        ];
        for (name, v) in times {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} = {v} is not a finite time >= 0"));
            }
        }
        if self.step_s_median <= 0.0 {
            return Err("step_s_median must be > 0".into());
        }
        Ok(())
    }
}

/// The split of one step's median time into its parts, seconds.
///
/// `compute`, `wait` and `allreduce` are the medians reported by the run;
/// `other` is what the step median has beyond their sum (data loading,
/// bookkeeping), clamped at zero. Medians do not add exactly, so
/// `compute + wait + allreduce + other` can exceed `step` slightly when
/// `other` is clamped; it never falls short of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingSplit {
    /// Median wall time of a step.
    pub step_s: f64,
    /// Forward + backward + optimiser.
    pub compute_s: f64,
    /// Blocked in the barrier before the allreduce (load imbalance).
    pub wait_s: f64,
    /// Inside the allreduce.
    pub allreduce_s: f64,
    /// `max(0, step - compute - wait - allreduce)`.
    pub other_s: f64,
}

impl TimingSplit {
    /// Builds the split from the four medians.
    ///
    /// ```
    /// use ringsgd_speedup::TimingSplit;
    /// let s = TimingSplit::from_medians(1.0, 0.7, 0.1, 0.15);
    /// assert!((s.other_s - 0.05).abs() < 1e-12);
    /// assert!((s.coordination_s() - 0.25).abs() < 1e-12);
    /// ```
    pub fn from_medians(step_s: f64, compute_s: f64, wait_s: f64, allreduce_s: f64) -> Self {
        let other_s = (step_s - compute_s - wait_s - allreduce_s).max(0.0);
        TimingSplit {
            step_s,
            compute_s,
            wait_s,
            allreduce_s,
            other_s,
        }
    }

    /// Coordination overhead of a step: waiting plus allreduce.
    pub fn coordination_s(&self) -> f64 {
        self.wait_s + self.allreduce_s
    }

    /// Height of the stacked bar: `compute + wait + allreduce + other`.
    pub fn stacked_s(&self) -> f64 {
        self.compute_s + self.wait_s + self.allreduce_s + self.other_s
    }
}

/// One configuration of the sweep and what its run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Allreduce algorithm of the run.
    pub algorithm: Algorithm,
    /// Number of ranks (one per node on a cluster).
    pub nodes: usize,
    /// Compute threads per rank.
    pub cores_per_rank: usize,
    /// The run's summary.
    pub summary: RunSummary,
}

impl Measurement {
    /// Pairs a configuration with its summary, checking that the summary is
    /// of that configuration (ranks, cores, algorithm).
    pub fn new(
        algorithm: Algorithm,
        nodes: usize,
        cores_per_rank: usize,
        summary: RunSummary,
    ) -> Result<Self> {
        let reported = parse_algorithm(&summary.allreduce)?;
        if reported != algorithm {
            return Err(Error::invalid(format!(
                "summary of the {algorithm} run at {nodes}x{cores_per_rank} reports allreduce {:?}",
                summary.allreduce
            )));
        }
        if summary.ranks != nodes || summary.cores_per_rank != cores_per_rank {
            return Err(Error::invalid(format!(
                "summary of the {algorithm} run at {nodes} ranks x {cores_per_rank} cores \
                 reports {} ranks x {} cores",
                summary.ranks, summary.cores_per_rank
            )));
        }
        Ok(Measurement {
            algorithm,
            nodes,
            cores_per_rank,
            summary,
        })
    }

    /// Nodes x cores per rank: the number of cores the run used.
    pub fn equivalent_cores(&self) -> usize {
        self.nodes * self.cores_per_rank
    }

    /// The step split into compute, wait, allreduce and other.
    pub fn split(&self) -> TimingSplit {
        let s = &self.summary;
        TimingSplit::from_medians(
            s.step_s_median,
            s.compute_s_median,
            s.wait_s_median,
            s.allreduce_s_median,
        )
    }

    /// Images per second at the median step time: `global_batch / step`.
    pub fn images_per_sec(&self) -> f64 {
        self.summary.global_batch as f64 / self.summary.step_s_median
    }

    /// Time of one epoch of `epoch_images` images at the median step time:
    /// `step * epoch_images / global_batch` (fractional steps allowed).
    pub fn epoch_s(&self, epoch_images: usize) -> f64 {
        self.summary.step_s_median * epoch_images as f64 / self.summary.global_batch as f64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn summary(
        alg: Algorithm,
        ranks: usize,
        cores: usize,
        step: f64,
        compute: f64,
        wait: f64,
        allreduce: f64,
    ) -> RunSummary {
        RunSummary {
            ranks,
            cores_per_rank: cores,
            global_batch: 64,
            steps: 12,
            allreduce: alg.name().into(),
            param_count: 1_116_970,
            grad_bytes: 4_467_880,
            warmup_steps: 2,
            step_s_median: step,
            compute_s_median: compute,
            allreduce_s_median: allreduce,
            wait_s_median: wait,
            images_per_sec: 64.0 / step,
            peak_rss_bytes_max: 50 << 20,
            total_s: step * 12.0,
            per_rank: vec![],
        }
    }

    #[test]
    fn algorithm_round_trips_and_rejects_unknown() {
        for a in Algorithm::ALL {
            assert_eq!(parse_algorithm(a.name()).unwrap(), a);
            assert_eq!(parse_algorithm(&a.name().to_uppercase()).unwrap(), a);
        }
        assert_eq!(parse_algorithm("gather-to-root").unwrap(), Algorithm::Naive);
        let err = parse_algorithm("tree").unwrap_err().to_string();
        assert!(err.contains("\"tree\""), "{err}");
    }

    #[test]
    fn split_other_is_remainder_and_clamped() {
        let s = TimingSplit::from_medians(1.0, 0.5, 0.2, 0.2);
        assert!((s.other_s - 0.1).abs() < 1e-12);
        assert!((s.stacked_s() - 1.0).abs() < 1e-12);
        assert!((s.coordination_s() - 0.4).abs() < 1e-12);
        let t = TimingSplit::from_medians(1.0, 0.6, 0.3, 0.2);
        assert_eq!(t.other_s, 0.0);
        assert!((t.stacked_s() - 1.1).abs() < 1e-12);
    }

    #[test]
    fn summary_parses_and_ignores_extra_fields() {
        let json = r#"{"ranks":3,"cores_per_rank":2,"global_batch":64,"steps":12,
            "allreduce":"naive","param_count":10,"grad_bytes":40,"warmup_steps":2,
            "step_s_median":0.5,"compute_s_median":0.3,"allreduce_s_median":0.1,
            "wait_s_median":0.05,"images_per_sec":128.0,"peak_rss_bytes_max":7,
            "total_s":6.5,"future_field":[1,2]}"#;
        let s = RunSummary::from_json(json, Path::new("x.json")).unwrap();
        assert_eq!((s.ranks, s.cores_per_rank, s.grad_bytes), (3, 2, 40));
        let m = Measurement::new(Algorithm::Naive, 3, 2, s).unwrap();
        assert_eq!(m.equivalent_cores(), 6);
        assert!((m.images_per_sec() - 128.0).abs() < 1e-9);
        assert!((m.epoch_s(50_000) - 0.5 * 50_000.0 / 64.0).abs() < 1e-9);
    }

    #[test]
    fn summary_errors_name_file_and_field() {
        let err = RunSummary::from_json("{\"ranks\":1}", Path::new("runs/a.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("runs/a.json") && err.contains("cores_per_rank"),
            "{err}"
        );
        let mut s = summary(Algorithm::Ring, 1, 1, 1.0, 1.0, 0.0, 0.0);
        s.step_s_median = f64::NAN;
        let json = serde_json::to_string(&serde_json::json!({
            "ranks":1,"cores_per_rank":1,"global_batch":64,"steps":12,"allreduce":"ring",
            "param_count":1,"grad_bytes":4,"warmup_steps":2,"step_s_median":-1.0,
            "compute_s_median":0.1,"allreduce_s_median":0.0,"wait_s_median":0.0,
            "images_per_sec":1.0,"peak_rss_bytes_max":1,"total_s":1.0}))
        .unwrap();
        let err = RunSummary::from_json(&json, Path::new("b.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("step_s_median"), "{err}");
        assert!(s.validate().is_err());
    }

    #[test]
    fn measurement_rejects_mismatched_summary() {
        let s = summary(Algorithm::Ring, 2, 1, 1.0, 0.8, 0.1, 0.1);
        assert!(Measurement::new(Algorithm::Naive, 2, 1, s.clone()).is_err());
        let err = Measurement::new(Algorithm::Ring, 3, 1, s.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("reports 2 ranks"), "{err}");
        assert!(Measurement::new(Algorithm::Ring, 2, 1, s).is_ok());
    }
}
