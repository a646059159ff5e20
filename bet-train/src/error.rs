//! The one error type of `bet-train`'s library: every failure names what broke and where.

use std::path::PathBuf;

/// Everything that can go wrong while loading data, splitting, budgeting or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read. The I/O error is the `source()`, not repeated in the message
    /// (`bet` prints the chain: "cannot read FILE: No such file or directory").
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A data line does not parse.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The data as a whole is unusable (empty, no users, ...).
    #[error("{path}: {reason}")]
    BadData {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A split protocol that the data cannot support (e.g. temporal without timestamps).
    #[error("split protocol {protocol}: {reason}")]
    Protocol {
        /// The protocol.
        protocol: &'static str,
        /// Why.
        reason: String,
    },
    /// A budget that cannot be met, or a malformed fraction.
    #[error("budget: {0}")]
    Budget(String),
    /// A checkpoint that cannot be used (damaged, another run's, unreadable).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A training setting that cannot work (for example a placement the backbone lacks).
    #[error("settings: {0}")]
    Settings(String),
    /// An error from the file format.
    #[error(transparent)]
    Format(#[from] bet_format::Error),
    /// An error from the runtime.
    #[error(transparent)]
    Runtime(#[from] bet_runtime::Error),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
