//! Where a step's time goes: compute, waiting for the slowest rank, the
//! communication the step waits for, and the communication hidden behind
//! compute.

use std::time::Instant;

/// The wall-clock split of one optimiser step on one rank, in seconds.
///
/// * `compute`: batch assembly, forward, backward and the optimiser update.
/// * `wait`: time blocked in a barrier before the allreduce, i.e. waiting for
///   the slowest rank (load imbalance, noisy neighbours).
/// * `allreduce`: the gradient allreduce the step waits for after its own
///   compute (all of it without overlap; with overlap only the exposed
///   part, which also holds any wait for slower ranks).
/// * `hidden`: communication that ran while this rank was still computing
///   (overlap only).
/// * `step`: the whole step (compute + wait + allreduce).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Forward + backward + optimiser (+ batch assembly).
    pub compute: f64,
    /// Blocked before the allreduce waiting for other ranks.
    pub wait: f64,
    /// In the gradient allreduce, after this rank's compute was done.
    pub allreduce: f64,
    /// The whole step.
    pub step: f64,
    /// Gradient communication overlapped with this rank's compute.
    pub hidden: f64,
}

impl StepTimes {
    /// Number of `f32` values [`StepTimes::to_array`] produces.
    pub const FIELDS: usize = 5;

    /// `[compute, wait, allreduce, step, hidden]` as `f32`, for exchanging
    /// between ranks.
    pub fn to_array(&self) -> [f32; 5] {
        [
            self.compute as f32,
            self.wait as f32,
            self.allreduce as f32,
            self.step as f32,
            self.hidden as f32,
        ]
    }

    /// Inverse of [`StepTimes::to_array`].
    pub fn from_array(a: [f32; 5]) -> Self {
        StepTimes {
            compute: a[0] as f64,
            wait: a[1] as f64,
            allreduce: a[2] as f64,
            step: a[3] as f64,
            hidden: a[4] as f64,
        }
    }

    /// From the first [`FIELDS`](Self::FIELDS) values of `a`.
    pub(crate) fn from_slice(a: &[f32]) -> Self {
        Self::from_array([a[0], a[1], a[2], a[3], a[4]])
    }

    /// Field-wise sum.
    pub fn add(&self, other: &StepTimes) -> StepTimes {
        StepTimes {
            compute: self.compute + other.compute,
            wait: self.wait + other.wait,
            allreduce: self.allreduce + other.allreduce,
            step: self.step + other.step,
            hidden: self.hidden + other.hidden,
        }
    }
}

/// The split of one step over all ranks, from each rank's own times.
///
/// A synchronous step lasts as long as its slowest rank. The split adds up to
/// that length:
///
/// * `compute`: the mean over ranks of the compute time (useful work);
/// * `wait`: how much the slowest rank's compute exceeds the mean (load
///   imbalance: the time the other ranks wait for it);
/// * `allreduce`: the rest of the step (barrier latency and the gradient
///   communication exposed on the critical path);
/// * `step`: the longest step time of any rank;
/// * `hidden`: the mean over ranks of the communication hidden behind
///   compute.
///
/// ```
/// # use ringsgd::trainer::{critical_path, StepTimes};
/// let rank = |c: f64, s: f64| StepTimes { compute: c, step: s, ..Default::default() };
/// let t = critical_path(&[rank(1.0, 1.5), rank(2.0, 2.5)]);
/// assert_eq!((t.compute, t.wait, t.allreduce, t.step), (1.5, 0.5, 0.5, 2.5));
/// ```
pub fn critical_path(ranks: &[StepTimes]) -> StepTimes {
    if ranks.is_empty() {
        return StepTimes::default();
    }
    let mean = ranks.iter().map(|t| t.compute).sum::<f64>() / ranks.len() as f64;
    let max_compute = ranks.iter().map(|t| t.compute).fold(0.0, f64::max);
    let step = ranks.iter().map(|t| t.step).fold(0.0, f64::max);
    let hidden = ranks.iter().map(|t| t.hidden).sum::<f64>() / ranks.len() as f64;
    StepTimes {
        compute: mean,
        wait: max_compute - mean,
        allreduce: (step - max_compute).max(0.0),
        step,
        hidden,
    }
}

/// Field-wise medians of a set of step times (`None` when empty).
///
/// ```
/// # use ringsgd::trainer::{median_times, StepTimes};
/// let t = |s| StepTimes { compute: s, step: s, ..Default::default() };
/// let m = median_times(&[t(3.0), t(1.0), t(2.0)]).unwrap();
/// assert_eq!(m.step, 2.0);
/// ```
pub fn median_times(times: &[StepTimes]) -> Option<StepTimes> {
    if times.is_empty() {
        return None;
    }
    let med = |f: fn(&StepTimes) -> f64| {
        let mut v: Vec<f64> = times.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    };
    Some(StepTimes {
        compute: med(|t| t.compute),
        wait: med(|t| t.wait),
        allreduce: med(|t| t.allreduce),
        step: med(|t| t.step),
        hidden: med(|t| t.hidden),
    })
}

/// A stopwatch that hands out laps.
#[derive(Debug)]
pub(crate) struct Lap(Instant);

impl Lap {
    pub(crate) fn start() -> Self {
        Lap(Instant::now())
    }

    /// Seconds since the last lap (or start), and restarts.
    pub(crate) fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let s = now.duration_since(self.0).as_secs_f64();
        self.0 = now;
        s
    }
}

/// Peak resident set size of this process in bytes (`VmHWM` on Linux), or
/// `None` where the platform does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_even_and_odd() {
        let t = |s: f64| StepTimes {
            compute: s,
            wait: 2.0 * s,
            allreduce: 0.0,
            step: s,
            hidden: s,
        };
        let m = median_times(&[t(4.0), t(1.0), t(2.0), t(3.0)]).unwrap();
        assert_eq!(m.compute, 2.5);
        assert_eq!(m.wait, 5.0);
        assert!(median_times(&[]).is_none());
    }

    #[test]
    fn array_round_trip_and_critical_path() {
        let a = StepTimes {
            compute: 1.0,
            wait: 0.5,
            allreduce: 0.25,
            step: 2.0,
            hidden: 0.125,
        };
        assert_eq!(StepTimes::from_array(a.to_array()), a);
        let b = StepTimes {
            compute: 0.5,
            wait: 1.0,
            allreduce: 0.25,
            step: 1.0,
            hidden: 0.375,
        };
        let m = critical_path(&[a, b]);
        assert_eq!(m.hidden, 0.25);
        assert_eq!(
            (m.compute, m.wait, m.allreduce, m.step),
            (0.75, 0.25, 1.0, 2.0)
        );
        assert_eq!(m.compute + m.wait + m.allreduce, m.step);
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 0);
        }
    }
}
