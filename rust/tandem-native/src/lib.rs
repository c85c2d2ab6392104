//! The library Go links: tandem's core with the example handlers that the tests, the demo and
//! the benchmarks use. A user builds their own crate like this one, with their handlers, in its
//! place: `tandem new` writes one (README: "Your handlers, your binary").

mod bench;

use std::time::Duration;

use tandem::envelope::Extensions;
use tandem::{Context, Event, Handler, HandlerError, Outcome, Registry};

/// Acknowledges and does nothing: the boundary's own cost.
pub struct Noop;
impl Handler for Noop {
    async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Ack
    }
}

/// Replies with the payload unchanged.
pub struct Echo;
impl Handler for Echo {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Reply(ev.data().to_vec())
    }
}

/// Replies with the envelope it read, encoded again: every field as the handler saw it, so a
/// test can hold what crossed against what was submitted.
pub struct Reflect;
impl Handler for Reflect {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Reply(tandem::envelope::encode_to_vec(ev.envelope()))
    }
}

/// The second version of [`Echo`], registered beside it (`demo.echo.v2`): the same replies,
/// as a new version that must not change them would give. Hot swap and shadow tests move a
/// route between the two.
pub struct EchoV2;
impl Handler for EchoV2 {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        let mut reply = Vec::with_capacity(ev.data().len());
        reply.extend_from_slice(ev.data());
        Outcome::Reply(reply)
    }
}

/// Replies with the payload's ASCII letters upper-cased.
pub struct Upper;
impl Handler for Upper {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Reply(ev.data().to_ascii_uppercase())
    }
}

/// CPU-bound: replies with the 64-bit FNV-1a hash of the payload, folded `rounds` times (the
/// `rounds` extension, default 1), as 8 big-endian bytes.
pub struct Hash;
impl Handler for Hash {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        let rounds = ev
            .extensions()
            .get("rounds")
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(1);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..rounds.max(1) {
            for &b in ev.data() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Outcome::Reply(h.to_be_bytes().to_vec())
    }
}

/// Async: awaits a tokio timer of `sleep_ms` milliseconds (extension, default 1), then acks.
pub struct Sleep;
impl Handler for Sleep {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        let ms = ev
            .extensions()
            .get("sleep_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Outcome::Ack
    }
}

/// Fails on demand: payload "retry" asks for a retry after 10 ms, "term" fails for good,
/// anything else acks.
pub struct Fail;
impl Handler for Fail {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        match ev.data() {
            b"retry" => Outcome::Retry {
                after: Duration::from_millis(10),
                error: HandlerError::with_code("unavailable", "asked to fail with retry"),
            },
            b"term" => Outcome::Term(HandlerError::with_code("invalid", "asked to fail for good")),
            _ => Outcome::Ack,
        }
    }
}

/// Fails with a retry until delivery `succeed_at` (extension, default 3), then replies with
/// the attempt number in decimal: the retry path end to end.
pub struct Flaky;
impl Handler for Flaky {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        let succeed_at = ev
            .extensions()
            .get("succeed_at")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(3);
        if ev.attempt() < succeed_at {
            return Outcome::Retry {
                after: Duration::from_millis(1),
                error: HandlerError::with_code(
                    "unavailable",
                    format!("attempt {} of {succeed_at}", ev.attempt()),
                ),
            };
        }
        Outcome::Reply(ev.attempt().to_string().into_bytes())
    }
}

/// Composes: emits a follow-up of this event, of the first type in its `next` extension (a
/// comma-separated route), with the payload upper-cased and the rest of the route passed on
/// in the follow-up's own `next`, then acks. Without `next` it only acks.
pub struct Relay;
impl Handler for Relay {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        let Some(route) = ev.extensions().get("next") else {
            return Outcome::Ack;
        };
        let (next, rest) = route.split_once(',').unwrap_or((route, ""));
        tracing::info!(next, "relaying");
        let id = format!("{}/relay", ev.id());
        let data = ev.data().to_ascii_uppercase();
        let pairs = [("next", rest)];
        let mut follow_up = ev.follow_up(next, &id, &data);
        if !rest.is_empty() {
            follow_up.extensions = Extensions::from_pairs(&pairs).unwrap_or_default();
        }
        match cx.emit(&follow_up).await {
            Ok(()) => Outcome::Ack,
            Err(e) => Outcome::Term(HandlerError::with_code("emit", e.to_string())),
        }
    }
}

/// Composes by request/reply: calls the event type in its `call` extension (default
/// `demo.upper`) with its payload and its other extensions, waits for the callee (in either
/// runtime) and replies with the callee's reply. A failed call fails this event for good,
/// with the callee's code and a message naming the callee; a call cut short (deadline,
/// shutdown) is retryable. With a `give_up_ms` extension it stops waiting after that many
/// milliseconds and replies "gave up" (the caller's future dropped, as a `select!` drops it).
pub struct Ask;
impl Handler for Ask {
    async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
        let callee = ev.extensions().get("call").unwrap_or("demo.upper");
        let id = format!("{}/ask", ev.id());
        let mut request = ev.follow_up(callee, &id, ev.data());
        request.extensions = ev.extensions();
        let call = cx.call(&request);
        let patience = ev
            .extensions()
            .get("give_up_ms")
            .and_then(|v| v.parse::<u64>().ok());
        let result = match patience {
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), call).await {
                Ok(result) => result,
                Err(_) => return Outcome::Reply(b"gave up".to_vec()),
            },
            None => call.await,
        };
        match result {
            Ok(reply) => Outcome::Reply(reply.into_vec()),
            Err(e) => match e.failure() {
                Some(f) if !f.retryable => Outcome::Term(HandlerError::with_code(
                    f.code.clone(),
                    format!("{callee} failed: {f}"),
                )),
                _ => Outcome::Retry {
                    after: Duration::from_millis(10),
                    error: HandlerError::with_code("call", format!("{callee}: {e}")),
                },
            },
        }
    }
}

/// Panics on demand (payload "panic"), to prove the panic is contained.
pub struct Panic;
impl Handler for Panic {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        if ev.data() == b"panic" {
            panic!("asked to panic");
        }
        Outcome::Ack
    }
}

/// The environment variable that, set when a runtime is created, registers [`WarmUpProbe`]
/// under `test.warm_up`, for tandem's own lifecycle tests (go/tandem/lifecycle_test.go):
/// "fail" makes its warm-up fail, a number of milliseconds makes it take that long. Never
/// set it in production; unset, nothing is registered.
pub const WARM_UP_PROBE: &str = "TANDEM_TEST_WARM_UP";

/// A test-only handler (see [`WARM_UP_PROBE`]) whose warm-up takes `delay`, then fails if
/// `fail`; it acknowledges every event.
pub struct WarmUpProbe {
    delay: Duration,
    fail: bool,
}

impl WarmUpProbe {
    /// The probe the variable's value asks for: "fail", or milliseconds of warm-up ("0" if
    /// unparsable).
    pub fn from_setting(value: &str) -> WarmUpProbe {
        WarmUpProbe {
            delay: Duration::from_millis(value.parse().unwrap_or(0)),
            fail: value == "fail",
        }
    }
}

impl Handler for WarmUpProbe {
    async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
        Outcome::Ack
    }
    async fn warm_up(&self) -> Result<(), HandlerError> {
        tokio::time::sleep(self.delay).await;
        if self.fail {
            return Err(HandlerError::with_code(
                "unavailable",
                "asked to fail its warm-up",
            ));
        }
        Ok(())
    }
}

/// Registers the example handlers under the `demo.*` event types. The tiny ones run inline
/// on the poller (`demo.noop.inline`, echo, upper) and so does `demo.sleep`, which moves into a
/// task of its own at its first await; the rest run as tasks from the start (`demo.ask` too:
/// it waits for its callee).
pub fn register(reg: &mut Registry) {
    reg.register("demo.noop", "noop", Noop)
        .register_inline("demo.noop.inline", "noop-inline", Noop)
        .register_inline("demo.echo", "echo", Echo)
        .register_inline("demo.echo.v2", "echo-v2", EchoV2)
        .register_inline("demo.reflect", "reflect", Reflect)
        .register_inline("demo.upper", "upper", Upper)
        .register("demo.hash", "hash", Hash)
        .register_inline("demo.sleep", "sleep", Sleep)
        .register("demo.fail", "fail", Fail)
        .register_inline("demo.flaky", "flaky", Flaky)
        .register_inline("demo.relay", "relay", Relay)
        .register("demo.ask", "ask", Ask)
        .register("demo.panic", "panic", Panic);
    if let Ok(setting) = std::env::var(WARM_UP_PROBE) {
        reg.register(
            "test.warm_up",
            "warm-up-probe",
            WarmUpProbe::from_setting(&setting),
        );
    }
}

tandem::register_handlers!(register);
