//! What can stop an audit before it reports.

use std::path::PathBuf;

/// An audit that could not run. Each variant is one clear message; [`AuditError::exit_code`]
/// tells an unreachable target apart from bad input.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The document is not JSON (or YAML) at all.
    #[error("{path}: not {format}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// JSON, YAML, TOML.
        format: &'static str,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// The document parses but is not a valid OpenAPI 3 document or HAR file.
    #[error("{path}: at {pointer}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The JSON pointer (RFC 6901) of the problem; `/` alone for the root.
        pointer: String,
        /// What is wrong.
        message: String,
    },
    /// The expectations file names something that does not exist.
    #[error("{path}: {message}")]
    Expectations {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A `--as` value is malformed.
    #[error("--as `{text}`: {why}")]
    Identity {
        /// The value given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// Bad arguments (the base URL, the hosts, the combination of options).
    #[error("{0}")]
    Usage(String),
    /// The base URL's host is not in the `--host` allow list.
    #[error("{url}: the host `{host}` is not in the --host allow list ({allowed})")]
    HostNotAllowed {
        /// The URL.
        url: String,
        /// Its host.
        host: String,
        /// The allow list.
        allowed: String,
    },
    /// The plan needs more requests than the budget.
    #[error(
        "the audit needs {needed} requests and the budget is {budget}: raise --budget or audit fewer operations or identities"
    )]
    OverBudget {
        /// Requests planned.
        needed: usize,
        /// `--budget`.
        budget: usize,
    },
    /// The target does not answer: one error, not a finding per operation.
    #[error("{url} is unreachable: {reason}")]
    Unreachable {
        /// The first URL that failed.
        url: String,
        /// The transport's error.
        reason: String,
    },
}

/// Exit code: the audit ran and found nothing at or above `--fail-on`.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: bad input (arguments, files).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: findings at or above `--fail-on`.
pub const EXIT_FINDINGS: u8 = 2;
/// Exit code: the target is unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;

impl AuditError {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => EXIT_ERROR,
        }
    }
}
