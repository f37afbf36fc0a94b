//! Deadlines on waiting for peers: what a rank is doing, and how long it may
//! wait for the others before the job is declared broken.
//!
//! A rank of a data-parallel job spends its communication time waiting for
//! its peers. When a peer dies, freezes (SIGSTOP, a swapping or overheated
//! Pi) or drops off the network, that wait never ends on its own: MPI has no
//! deadline, and Open MPI notices only processes that exit. A [`Watch`] set
//! on a communicator ([`Communicator::set_watch`](super::Communicator::set_watch))
//! gives every blocking operation a deadline; a rank that passes it asks
//! every other rank whether it is alive (a liveness check on a separate
//! channel, answered by any rank that is itself inside a communicator call),
//! and reports which ranks did not answer, on which hosts, while doing what.
//!
//! The timeout is relative to the phase: a healthy rank may wait for its
//! peers as long as the slowest of them takes to reach the same collective,
//! which is short in a training step and longer while data is loaded,
//! while the test set is evaluated, or while rank 0 writes a checkpoint.
//! [`PeerTimeout`] holds the base timeout and scales it per [`Phase`].
//!
//! ```
//! use std::time::Duration;
//! use ringsgd::comm::watch::{Phase, PeerTimeout};
//!
//! let t = PeerTimeout::new(Duration::from_secs(10))?;
//! assert_eq!(t.watch(Phase::Train, 3, 120).timeout, Duration::from_secs(10));
//! assert_eq!(t.watch(Phase::Evaluate, 3, 120).timeout, Duration::from_secs(60));
//! # Ok::<(), ringsgd::Error>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// What a rank is doing when it waits for its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Loading and agreeing on the data, building the trainer, restoring a
    /// checkpoint.
    Setup,
    /// The first training steps of a run (page faults, workspaces growing).
    Warmup,
    /// A training step.
    Train,
    /// Evaluating on the test set.
    Evaluate,
    /// Rank 0 writing a checkpoint or metrics while the others wait.
    Checkpoint,
    /// After the last step: final checks, export, summaries.
    Finish,
}

impl Phase {
    /// All phases, in the order of a run.
    pub const ALL: [Phase; 6] = [
        Phase::Setup,
        Phase::Warmup,
        Phase::Train,
        Phase::Evaluate,
        Phase::Checkpoint,
        Phase::Finish,
    ];

    /// How many times the base timeout a wait in this phase may take.
    ///
    /// Training steps get the base timeout. The first steps, evaluation,
    /// checkpoints and the end of the run get 6x: their waits include the
    /// difference between the ranks' evaluation times or rank 0's write to
    /// an SD card. Setup gets 12x: ranks load and decompress the data set
    /// at their own speed (a Pi 3 beside a Pi 4) before agreeing on it.
    pub fn factor(self) -> u32 {
        match self {
            Phase::Train => 1,
            Phase::Warmup | Phase::Evaluate | Phase::Checkpoint | Phase::Finish => 6,
            Phase::Setup => 12,
        }
    }

    /// A stable small code, for the liveness answer on the wire.
    pub(crate) fn code(self) -> u64 {
        Phase::ALL.iter().position(|p| *p == self).unwrap_or(0) as u64
    }

    /// The phase of a [`Phase::code`], if valid.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn from_code(code: u64) -> Option<Phase> {
        Phase::ALL.get(usize::try_from(code).ok()?).copied()
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Setup => "setup",
            Phase::Warmup => "first steps",
            Phase::Train => "training",
            Phase::Evaluate => "evaluation",
            Phase::Checkpoint => "checkpoint",
            Phase::Finish => "end of run",
        })
    }
}

/// The deadline of every blocking operation of a communicator, and what the
/// rank is doing (named in the error when the deadline passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// How long one operation may wait for a peer.
    pub timeout: Duration,
    /// What the rank is doing.
    pub phase: Phase,
    /// 1-based epoch (0 when not in an epoch).
    pub epoch: u64,
    /// Global optimiser step (the one being computed in training).
    pub step: u64,
}

impl fmt::Display for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.phase {
            Phase::Setup => write!(f, "setup"),
            Phase::Finish => write!(f, "the end of the run (step {})", self.step),
            p => write!(f, "{p}, epoch {}, step {}", self.epoch, self.step),
        }
    }
}

/// A base peer timeout and its per-[`Phase`] scaling (see
/// [`Phase::factor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTimeout {
    base: Duration,
}

impl PeerTimeout {
    /// Default base timeout: 10 s. A healthy step never waits that long for
    /// a peer on a Pi cluster (the README's "Rehearse a cluster" section has
    /// the measured longest waits), and a dead, frozen or cut-off Pi is
    /// named about 10 s after it stopped.
    pub const DEFAULT: Duration = Duration::from_secs(10);

    /// Shortest base timeout accepted: a liveness check needs a moment.
    pub const MIN: Duration = Duration::from_millis(500);

    /// A policy with base timeout `base` (at least [`PeerTimeout::MIN`],
    /// at most a day).
    pub fn new(base: Duration) -> Result<Self> {
        if base < Self::MIN || base > Duration::from_secs(86_400) {
            return Err(Error::invalid(format!(
                "peer timeout {:.3} s is out of range: use {} s to 86400 s",
                base.as_secs_f64(),
                Self::MIN.as_secs_f64()
            )));
        }
        Ok(PeerTimeout { base })
    }

    /// The base timeout (that of a training step).
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The watch for `phase` at `epoch` and `step`.
    pub fn watch(&self, phase: Phase, epoch: u64, step: u64) -> Watch {
        Watch {
            timeout: self.base * phase.factor(),
            phase,
            epoch,
            step,
        }
    }

    /// How long a rank that passed its deadline waits for the answers of a
    /// liveness check: half the base timeout, between 1 s and 5 s. Long
    /// enough for a rank still finishing its share of a step to reach its
    /// next communicator call and answer.
    pub fn grace(timeout: Duration) -> Duration {
        (timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }
}

impl Default for PeerTimeout {
    fn default() -> Self {
        PeerTimeout {
            base: Self::DEFAULT,
        }
    }
}

/// The longest single wait for peers seen in each [`Phase`]: what a
/// healthy run needs, against which a peer timeout is chosen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LongestWaits([Duration; Phase::ALL.len()]);

impl LongestWaits {
    /// Records a wait of `d` in `phase`.
    pub fn record(&mut self, phase: Phase, d: Duration) {
        let slot = &mut self.0[phase.code() as usize];
        *slot = (*slot).max(d);
    }

    /// The longest wait recorded in `phase`.
    pub fn get(&self, phase: Phase) -> Duration {
        self.0[phase.code() as usize]
    }

    /// The longest wait of each phase, as seconds, in [`Phase::ALL`] order.
    pub fn seconds(&self) -> [f64; Phase::ALL.len()] {
        self.0.map(|d| d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_their_codes_and_scale_the_timeout() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_code(p.code()), Some(p));
        }
        assert_eq!(Phase::from_code(99), None);
        let t = PeerTimeout::new(Duration::from_secs(2)).unwrap();
        assert_eq!(t.watch(Phase::Setup, 0, 0).timeout, Duration::from_secs(24));
        assert_eq!(t.watch(Phase::Train, 1, 5).timeout, Duration::from_secs(2));
    }

    #[test]
    fn out_of_range_timeouts_are_refused_with_the_range() {
        let e = PeerTimeout::new(Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("0.5 s to 86400 s"), "{e}");
        assert!(PeerTimeout::new(Duration::from_secs(100_000)).is_err());
    }

    #[test]
    fn grace_is_half_the_timeout_within_bounds() {
        assert_eq!(
            PeerTimeout::grace(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(
            PeerTimeout::grace(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            PeerTimeout::grace(Duration::from_millis(600)),
            Duration::from_secs(1)
        );
    }
}
