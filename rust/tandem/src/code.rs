//! The error codes tandem itself gives, as constants: the `tandem-code` rule of
//! `ffi/envelope.cddl`, where the vocabulary is defined once for both runtimes (a test checks
//! this list against it, in order).
//!
//! A handler may give a code of its own ([`HandlerError::with_code`](crate::HandlerError)):
//! decoders accept any non-empty text, and a code outside this list is passed through
//! unchanged.

/// The handler failed (an error without a code of its own).
pub const HANDLER: &str = "handler";
/// The handler panicked.
pub const PANIC: &str = "panic";
/// A Go handler's goroutine exited (`runtime.Goexit`) before the handler returned
/// (retryable). Go gives it; a Rust handler never does.
pub const GOEXIT: &str = "goexit";
/// The delivery's deadline passed.
pub const TIMEOUT: &str = "timeout";
/// The runtime shut down before the event finished (retryable).
pub const CANCELLED: &str = "cancelled";
/// A Rust handler did not stop at shutdown (retryable).
pub const ABANDONED: &str = "abandoned";
/// The envelope could not be decoded.
pub const DECODE: &str = "decode";
/// No handler is routed for the event's type.
pub const NO_ROUTE: &str = "no_route";
/// The event failed validation (a required attribute missing).
pub const INVALID: &str = "invalid";
/// Refused: the route was full and its policy is Reject.
pub const OVERLOADED: &str = "overloaded";
/// Dropped: the route was full and its policy is Shed.
pub const SHED: &str = "shed";
/// The reply exceeded the reply slot.
pub const REPLY_TOO_LARGE: &str = "reply_too_large";
/// Refused by a circuit breaker.
pub const CIRCUIT_OPEN: &str = "circuit_open";
/// Refused by a rate limit.
pub const RATE_LIMITED: &str = "rate_limited";
/// Refused by deduplication: seen before.
pub const DUPLICATE: &str = "duplicate";
/// The runtimes disagreed on the ownership protocol.
pub const PROTOCOL: &str = "protocol";
/// A failure that came without an error envelope.
pub const UNKNOWN: &str = "unknown";

/// Every code above, in the order of the `tandem-code` rule.
pub const ALL: [&str; 17] = [
    HANDLER,
    PANIC,
    GOEXIT,
    TIMEOUT,
    CANCELLED,
    ABANDONED,
    DECODE,
    NO_ROUTE,
    INVALID,
    OVERLOADED,
    SHED,
    REPLY_TOO_LARGE,
    CIRCUIT_OPEN,
    RATE_LIMITED,
    DUPLICATE,
    PROTOCOL,
    UNKNOWN,
];

#[cfg(all(test, not(loom)))]
mod tests {
    /// The quoted alternatives of the `tandem-code` rule, in order.
    fn cddl_codes() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ffi/envelope.cddl");
        let cddl = std::fs::read_to_string(path).expect("ffi/envelope.cddl");
        let mut lines = cddl.lines().skip_while(|l| !l.starts_with("tandem-code"));
        let first = lines.next().expect("a tandem-code rule");
        let rule = std::iter::once(first.trim_start_matches("tandem-code").trim_start()).chain(
            lines
                .map(str::trim_start)
                .take_while(|l| l.starts_with('/')),
        );
        rule.map(|alt| {
            let text = alt.trim_start_matches(['=', '/', ' ']);
            let quoted = text.split('"').nth(1).expect("a quoted code");
            quoted.to_owned()
        })
        .collect()
    }

    #[test]
    fn the_codes_are_the_cddl_vocabulary_in_order() {
        assert_eq!(cddl_codes(), super::ALL);
    }
}
