//! The allreduce algorithms an [`Allreducer`](super::Allreducer) can run.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Which allreduce an [`Allreducer`](super::Allreducer) runs.
///
/// Spelled `ring`, `mpi` and `naive` on command lines and in reports
/// ([`FromStr`] and [`Display`](fmt::Display) round-trip). Ordered as
/// [`Algorithm::ALL`] lists them, so that reports can key maps by it.
///
/// ```
/// use ringsgd::collectives::Algorithm;
///
/// let a: Algorithm = "ring".parse()?;
/// assert_eq!(a, Algorithm::Ring);
/// assert_eq!(Algorithm::Naive.to_string(), "naive");
/// assert!("tree".parse::<Algorithm>().is_err());
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// Hand-written ring allreduce (reduce-scatter + allgather), segmented
    /// and pipelined. Bandwidth optimal; bitwise reproducible.
    Ring,
    /// The transport's own allreduce (`MPI_Allreduce` under MPI); on a
    /// transport without one (the in-process one), the gather-to-root
    /// scheme of [`Algorithm::Naive`] stands in.
    Mpi,
    /// Gather to rank 0, reduce there in rank order, send the result back
    /// (the master-node scheme). Rank 0 moves `2 (p - 1) N` values.
    Naive,
}

impl Algorithm {
    /// Every algorithm, in the order reports list them.
    pub const ALL: [Algorithm; 3] = [Algorithm::Ring, Algorithm::Mpi, Algorithm::Naive];

    /// The name used by [`Display`](fmt::Display) and [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ring => "ring",
            Algorithm::Mpi => "mpi",
            Algorithm::Naive => "naive",
        }
    }

    /// Stable small code used in the per-call agreement header.
    pub(crate) fn code(self) -> u8 {
        match self {
            Algorithm::Ring => 1,
            Algorithm::Mpi => 2,
            Algorithm::Naive => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.code() == code)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown allreduce algorithm {s:?}: expected one of ring, mpi, naive"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_codes_are_distinct() {
        for a in Algorithm::ALL {
            assert_eq!(a.to_string().parse::<Algorithm>().unwrap(), a);
            assert_eq!(Algorithm::from_code(a.code()), Some(a));
        }
        assert!(Algorithm::ALL.windows(2).all(|w| w[0] < w[1]));
        let e = "Ring".parse::<Algorithm>().unwrap_err().to_string();
        assert!(
            e.contains("\"Ring\"") && e.contains("ring, mpi, naive"),
            "{e}"
        );
    }
}
