//! The library's one error type.
//!
//! Every message is a sentence a painter can act on: what went wrong, what was expected, what to
//! do, with the offending path last. The binary prints these with `{:#}` and exits non-zero.

use std::path::{Path, PathBuf};

/// Everything that can go wrong inside Easel's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder the user named does not exist.
    #[error("{what} not found: {}", path.display())]
    NotFound {
        /// What was being looked for ("model", "init image", …).
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file exists but is not what Easel expected.
    #[error("{message}: {}", path.display())]
    BadFile {
        /// The sentence explaining what was wrong and what to do.
        message: String,
        /// The file.
        path: PathBuf,
    },
    /// A request parameter the user chose is not usable.
    #[error("{0}")]
    BadRequest(String),
    /// The operation was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
    /// The output file exists and overwriting was not asked for.
    #[error("{} already exists; choose another name or pass --overwrite", path.display())]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a file failed at the operating-system level.
    #[error("{message}: {source}: {}", path.display())]
    Io {
        /// What Easel was doing.
        message: String,
        /// The underlying failure.
        source: std::io::Error,
        /// The file involved.
        path: PathBuf,
    },
    /// A tensor computation failed (usually a bug or an out-of-memory condition).
    #[error("computation failed: {0}")]
    Compute(candle_core::Error),
    /// Downloading from the model hub failed.
    #[error("{0}")]
    Hub(String),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<candle_core::Error> for Error {
    /// Keeps candle's message and drops the backtrace it attaches when `RUST_BACKTRACE` is set:
    /// users get a sentence, not a stack.
    fn from(err: candle_core::Error) -> Self {
        let mut err = err;
        while let candle_core::Error::WithBacktrace { inner, .. } = err {
            err = *inner;
        }
        Error::Compute(err)
    }
}

impl Error {
    /// A `BadFile` error with a message and a path.
    pub fn bad_file(message: impl Into<String>, path: impl AsRef<Path>) -> Self {
        Error::BadFile { message: message.into(), path: path.as_ref().to_path_buf() }
    }

    /// A `NotFound` error.
    pub fn not_found(what: impl Into<String>, path: impl AsRef<Path>) -> Self {
        Error::NotFound { what: what.into(), path: path.as_ref().to_path_buf() }
    }

    /// An `Io` error.
    pub fn io(message: impl Into<String>, source: std::io::Error, path: impl AsRef<Path>) -> Self {
        Error::Io { message: message.into(), source, path: path.as_ref().to_path_buf() }
    }
}
