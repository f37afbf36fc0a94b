//! The crate's one error type.
//!
//! Every message names the thing that is wrong: the flag, the file and record,
//! the layer, the rank.

use std::path::PathBuf;

/// Everything that can go wrong in `ringsgd`.
///
/// Variants carry the culprit (file, record, layer, rank, flag) so that the
/// message printed by a binary is enough to fix the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter passed to a public function or given on a command line is
    /// invalid. The message names the parameter or flag.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A tensor had the wrong shape for a layer or an operation.
    #[error("shape error in {layer}: {msg}")]
    Shape {
        /// Layer or operation that rejected the input.
        layer: String,
        /// What was expected and what was found.
        msg: String,
    },

    /// Ranks disagree about something they must agree on (buffer length,
    /// configuration, model). Raised on every rank, not only the odd one out.
    #[error("ranks disagree: {0}")]
    RankMismatch(String),

    /// A communication failure (message too long/short, peer gone, MPI error).
    #[error("communication error on rank {rank}: {msg}")]
    Comm {
        /// The rank that saw the error.
        rank: usize,
        /// What happened.
        msg: String,
    },

    /// A data file is malformed. `record` is the 0-based record index when
    /// the problem is inside one record.
    #[error("bad data in {}{}: {msg}", file.display(), record.map(|r| format!(" (record {r})")).unwrap_or_default())]
    Data {
        /// The offending file.
        file: PathBuf,
        /// The offending record, if the problem is inside one.
        record: Option<usize>,
        /// What is wrong.
        msg: String,
    },

    /// A checkpoint or exported model file is malformed or incompatible.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },

    /// An I/O error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A network download failed.
    #[error("download of {url} failed: {msg}")]
    Download {
        /// The URL.
        url: String,
        /// What happened.
        msg: String,
    },

    /// Peers stopped answering: a rank waited past its deadline (see
    /// [`crate::comm::watch`]) and a liveness check found ranks that do not
    /// answer (dead, frozen, or cut off from the network). Over MPI the job
    /// cannot go on after this; the MPI communicator ends it.
    #[error("rank {rank} (host {host}): peer timeout: {msg}")]
    PeerTimeout {
        /// The rank that waited.
        rank: usize,
        /// Its host.
        host: String,
        /// The ranks that did not answer.
        unresponsive: Vec<usize>,
        /// What it waited for, in which phase, for how long, and what the
        /// ranks that answered were doing.
        msg: String,
    },

    /// Training diverged: the loss or the averaged gradient of a step is
    /// not finite (NaN or infinite). Raised on every rank at the same step,
    /// before that step's update is applied.
    #[error(
        "training diverged at epoch {epoch}, step {step_in_epoch} (global step {step}): {msg}"
    )]
    NonFinite {
        /// The 1-based epoch.
        epoch: u64,
        /// The 1-based step within the epoch.
        step_in_epoch: u64,
        /// The 1-based global optimiser step.
        step: u64,
        /// What was not finite and what to do.
        msg: String,
    },

    /// Model replicas drifted apart across ranks (detected by weight hashing).
    #[error("replicas diverged at step {step}: {msg}")]
    ReplicaDrift {
        /// The optimiser step at which the hashes were compared.
        step: u64,
        /// Which ranks disagree.
        msg: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(layer: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Shape {
            layer: layer.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
