//! What a handler's run ends in ([`Outcome`], [`HandlerError`]) and why an emit fails
//! ([`EmitError`]): plain values, below every module that produces or consumes them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::code;
use crate::envelope::RetryPolicy;

/// Why [`Context::emit`](crate::Context::emit) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitError {
    /// The encoded envelope exceeds the reply slot size (`needed` bytes).
    TooLarge {
        /// The encoded size.
        needed: usize,
    },
    /// A required attribute (id, source, type) is empty.
    Invalid(&'static str),
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::TooLarge { needed } => {
                write!(f, "emitted event of {needed} bytes exceeds the reply slot")
            }
            EmitError::Invalid(what) => write!(f, "emitted event lacks {what}"),
        }
    }
}

impl std::error::Error for EmitError {}

/// A handler's verdict on one event. The Go side settles it: a reply reaches the caller, a
/// retry is judged by the route's retry policy, a term is dead-lettered.
///
/// ```
/// use std::time::Duration;
/// use tandem::{HandlerError, Outcome};
///
/// fn verdict(status: u16, body: Vec<u8>) -> Outcome {
///     match status {
///         200 => Outcome::Reply(body),
///         204 => Outcome::Ack,
///         503 => Outcome::Retry {
///             after: Duration::from_millis(200),
///             error: HandlerError::with_code("unavailable", "upstream is down"),
///         },
///         _ => Outcome::Term(HandlerError::with_code("invalid", format!("upstream said {status}"))),
///     }
/// }
/// assert!(matches!(verdict(204, vec![]), Outcome::Ack));
/// ```
#[derive(Debug)]
pub enum Outcome {
    /// Done, nothing to say back.
    Ack,
    /// Done, with a reply payload for the submitter (request/reply).
    Reply(Vec<u8>),
    /// Failed; deliver again after `after` (the Go side applies its retry policy).
    Retry {
        /// Suggested delay before the next delivery.
        after: Duration,
        /// Why.
        error: HandlerError,
    },
    /// Failed for good: dead-letter it, never retry.
    Term(HandlerError),
}

/// An error a handler reports; it crosses to Go as an error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// A short machine-readable code, e.g. "handler", "timeout", "invalid_input".
    pub code: Cow<'static, str>,
    /// A human-readable message.
    pub message: String,
    /// An optional retry policy that overrides the route's default.
    pub retry: Option<RetryPolicy>,
}

impl HandlerError {
    /// An error with code "handler".
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError::with_code(code::HANDLER, message)
    }
    /// An error with the given code.
    pub fn with_code(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> HandlerError {
        HandlerError {
            code: code.into(),
            message: message.into(),
            retry: None,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HandlerError {}
