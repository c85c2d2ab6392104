//! Running a handler: routing, deadlines, cancellation, panics, inline or in a task.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;

use crate::code;
use crate::completion::{Finished, now_ns};
use crate::envelope;
use crate::handler::{CallerRef, Context, Event, Lent, Route};
use crate::outcome::{HandlerError, Outcome};
use crate::poller::Drainer;
use crate::shared::Shared;
use crate::slots::{Delivery, RequestSlot};
use crate::spare::InBlock;

/// One event, decoded and routed (the route, borrowed from the runtime's registry, and the
/// event borrowing its bytes), or the reason it cannot run: boxed, as it is rare and some 90
/// bytes, which every event's future would otherwise hold room for.
pub(crate) type Job<'s, 'a> = Result<(&'s Route, Event<'a>), Box<HandlerError>>;

/// Routes one envelope, as decoded (`envelope::decode`, or a request slot's
/// `RequestSlot::decode`), which the job borrows: to handler `route - 1` (in event-type
/// order) when Go chose one, else by the envelope's type. `delivery` is the request slot's
/// header; without one (no slot) the envelope's attempt and deadline stand in. Its refusals
/// are made apart, so that what is left inlines into the event's future.
#[inline(always)]
pub(crate) fn prepare<'s, 'a>(
    shared: &'s Shared,
    env: &'a Result<envelope::Envelope<'a>, envelope::DecodeError>,
    delivery: Option<Delivery>,
    route: u32,
) -> Job<'s, 'a> {
    let env = match env {
        Ok(env) => env,
        Err(e) => return Err(malformed(*e)),
    };
    let found = match route {
        0 => shared.registry.route(env.ty),
        n => shared.registry.route_at(n as usize - 1),
    };
    let Some(found) = found else {
        return Err(unrouted(env.ty, route));
    };
    let delivery = delivery.unwrap_or_else(|| Delivery::of_envelope(env));
    Ok((found, Event::new(env, delivery)))
}

#[cold]
#[inline(never)]
fn malformed(e: envelope::DecodeError) -> Box<HandlerError> {
    Box::new(HandlerError::with_code(
        code::DECODE,
        format!("malformed envelope: {e}"),
    ))
}

#[cold]
#[inline(never)]
fn unrouted(ty: &str, route: u32) -> Box<HandlerError> {
    Box::new(HandlerError::with_code(
        code::NO_ROUTE,
        format!("no Rust handler for event type {ty:?} (route {route})"),
    ))
}

/// Whether the event runs on the poller first: handlers registered inline do, and so do
/// refusals, which complete at once. Decodes only when Go did not name the handler.
fn runs_inline(shared: &Shared, slot: &RequestSlot, route: u32) -> bool {
    match route {
        0 => prepare(shared, &slot.decode(), None, 0).is_ok_and(|(r, _)| r.inline),
        n => shared
            .registry
            .route_at(n as usize - 1)
            .is_none_or(|r| r.inline),
    }
}

/// Runs the event in `slot` (routed by `route`, as `prepare` reads it) and publishes its
/// completion, which hands the slot back. The task owns the guard, and the event borrows from
/// it inside the task, so the slot stays Rust's for as long as anything reads it.
///
/// The event's future borrows the runtime rather than holding a reference count of it: a
/// count is a word both cores write for every event, and with the request slots' (which the
/// guard no longer holds either) it cost more than a tenth of a saturated runtime's cycles.
/// The future lives no longer than `shared`'s runtime: it finishes or is dropped within this
/// call, or is spawned inside [`Kept`], which holds a count until after the future is dropped.
pub(crate) fn dispatch_slot(
    shared: &Arc<Shared>,
    slot: RequestSlot,
    route: u32,
    cx: &mut std::task::Context<'_>,
    by: Drainer,
) {
    // A blocked submitter's own thread runs its event's handler, whatever its kind, as far
    // as the handler goes without waiting (io_uring's DEFER_TASKRUN): a task handler that
    // finishes at once then costs no worker wake.
    let inline =
        (by == Drainer::Caller && slot.delivery().waited) || runs_inline(shared, &slot, route);
    // Registered here, on the drainer, before the task runs: a cancel that follows the event
    // in the ring is drained after it and must find it.
    let by_go = slot
        .delivery()
        .cancellable
        .then(|| shared.cancellable(slot.token()));
    // SAFETY: the reference lives in the event's future only, and the future lives no longer
    // than the runtime (above): polled here and finished or dropped before this returns, while
    // the caller's `shared` holds the runtime, or spawned as `Kept`. prepare, run and finish
    // borrow it for their own calls; none keeps it.
    let sh: &'static Shared = unsafe { &*Arc::as_ptr(shared) };
    let task = move || async move {
        // Decoded into the future's own place for it, and borrowed by the job from there.
        let env = slot.decode();
        let job = prepare(sh, &env, Some(slot.delivery()), route);
        let finished = run(sh, &job, slot.token(), by_go.as_ref()).await;
        if by_go.is_some() {
            sh.forget_cancellable(slot.token());
        }
        sh.completions.finish(slot, finished).await;
    };
    #[cfg(all(test, not(loom)))]
    tests::EVENT_FUTURE_SIZE.fetch_max(output_size(&task), Relaxed);
    if inline {
        // Run the handler on this thread until it first waits: a handler that finishes
        // without waiting costs no task. One that waits moves, in its block, into a task of
        // its own, whose first poll registers its own waker (this one is a no-op, or the
        // poller's, which may then be woken once, spuriously).
        let mut task = InBlock::event(task);
        if Pin::new(&mut task).poll(cx).is_pending() {
            spawn(shared, Kept::new(task, shared), by);
        }
    } else {
        spawn(shared, Kept::new(task(), shared), by);
    }
}

/// The size of what `make` returns.
#[cfg(all(test, not(loom)))]
fn output_size<T>(_: &impl FnOnce() -> T) -> usize {
    std::mem::size_of::<T>()
}

/// A spawned event's future, which borrows the runtime (`dispatch_slot`), with a reference
/// count that keeps the runtime alive until the future is gone: fields drop in declaration
/// order, the future first.
struct Kept<F, K = Arc<Shared>> {
    fut: F,
    _keep: K,
}

impl<F, K: Clone> Kept<F, K> {
    fn new(fut: F, keep: &K) -> Kept<F, K> {
        Kept {
            fut,
            _keep: keep.clone(),
        }
    }
}

impl<F: Future, K> Future for Kept<F, K> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is pinned structurally: nothing moves it out of a pinned `Kept`, which
        // has no Drop of its own and is Unpin only when `F` is.
        unsafe { self.map_unchecked_mut(|k| &mut k.fut) }.poll(cx)
    }
}

/// Moves an event's handler into a task of its own. From a submitter's thread that wakes a
/// tokio worker (counted): the poller, on a worker, spawns without.
fn spawn(shared: &Shared, task: impl Future<Output = ()> + Send + 'static, by: Drainer) {
    shared.counters.spawned.fetch_add(1, Relaxed);
    if by == Drainer::Caller {
        shared.counters.task_wakes.fetch_add(1, Relaxed);
    }
    shared.tracker.spawn(task);
}

/// Why a handler's run ended before the handler did.
enum Stopped {
    Shutdown,
    GivenUp,
    Expired,
}

/// Runs a job's handler, containing panics and honouring cancellation: the runtime's, the
/// deadline's, and Go's (`by_go`, for a delivery Go may cancel). A job that cannot run is
/// finished here.
///
/// The job stays with the caller and the handler's future borrows its event: an async
/// function keeps an argument it is given by value twice (as given, and as the local it
/// moves into). The event's envelope (some 300 bytes) is decoded into the caller's future at
/// its first poll, once the future is in its box or its task, and stays there.
pub(crate) async fn run<'s>(
    shared: &'s Shared,
    job: &Job<'s, '_>,
    token: u64,
    by_go: Option<&tokio_util::sync::CancellationToken>,
) -> Finished<'s> {
    match job {
        Ok((route, ev)) => run_handler(shared, route, ev, token, by_go).await,
        // A refusal (malformed, unrouted): rare, so its error is copied.
        Err(err) => Finished {
            outcome: Outcome::Term((**err).clone()),
            handler: "",
            started_ns: 0,
            finished_ns: 0,
        },
    }
}

async fn run_handler<'s>(
    shared: &'s Shared,
    route: &'s Route,
    ev: &Event<'_>,
    token: u64,
    by_go: Option<&tokio_util::sync::CancellationToken>,
) -> Finished<'s> {
    // The delivery's deadline (set by Go from the route's timeout or by the submitter) bounds
    // the whole delivery, waiting for a concurrency permit included.
    let timeout = || Outcome::Retry {
        after: Duration::ZERO,
        error: HandlerError::with_code(code::TIMEOUT, "the event's deadline passed"),
    };
    let deadline = ev.deadline();
    if deadline.is_some_and(|d| d <= now_ns() as i64) {
        return Finished {
            outcome: timeout(),
            handler: &route.name,
            started_ns: 0,
            finished_ns: 0,
        };
    }
    // With a deadline the event gets a token of its own, fired at the deadline, and a deadline
    // the handler may push back (Context::in_progress).
    let deadline = deadline.map(|d| Arc::new(std::sync::atomic::AtomicI64::new(d)));
    let cancel = match by_go {
        Some(t) => Some(t.clone()),
        None => deadline.as_ref().map(|_| shared.cancel.child_token()),
    };
    // SAFETY: `ev` is borrowed for longer than this future, so it outlives `cx`, a local of it,
    // and cannot move meanwhile; the handler gets `&cx` only for the length of the call below,
    // and a Context is neither Clone nor built elsewhere.
    let caller = unsafe { CallerRef::new(ev.envelope()) };
    let cx = Context {
        caller,
        // SAFETY: the route and the runtime are borrowed for 's, which outlives this future
        // and so `cx`, a local of it.
        handler: unsafe { Lent::new(&*route.name) },
        cancel: cancel.clone(),
        // SAFETY: as above.
        completions: unsafe { Lent::new(&shared.completions) },
        token,
        deadline: deadline.clone(),
        shadow: ev.shadow(),
    };
    // Clock reads cost tens of nanoseconds on some VMs: only for a delivery Go times.
    let timed = ev.timed();
    let clock = || if timed { now_ns() } else { 0 };
    let mut started = 0;
    let handler = async {
        let _permit = match &route.limit {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        };
        started = clock();
        let run = crate::panics::contain(route.handler.call(ev, &cx));
        // The handler's records carry its event's fields (crate::logs): with tandem's
        // subscriber, from the event its future carries; with another, from a span.
        if crate::logs::forwarding() {
            crate::logs::in_event(ev, &route.name, run).await
        } else {
            let span = crate::logs::event_span(ev, &route.name);
            tracing::Instrument::instrument(run, span).await
        }
    };
    // What ends a handler early: the runtime's shutdown, Go giving up, the deadline. An async
    // block builds nothing until its first poll, so a handler that finishes without waiting
    // (an inline one, at every load) never registers with the runtime's cancellation token,
    // whose waiter list is a lock every core shares.
    let watch = async {
        let shutdown = shared.cancel.cancelled();
        let given_up = async {
            match by_go {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let expired = async {
            let Some(deadline) = &deadline else {
                return std::future::pending().await;
            };
            // The timer lives on the heap: only events with a deadline pay for it, and the
            // future of every event stays smaller (it is moved into its task).
            let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
            loop {
                let left = deadline.load(Relaxed).saturating_sub(now_ns() as i64);
                if left <= 0 {
                    return;
                }
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_nanos(left as u64));
                timer.as_mut().await;
            }
        };
        tokio::select! {
            biased;
            _ = shutdown => Stopped::Shutdown,
            _ = given_up, if by_go.is_some() => Stopped::GivenUp,
            _ = expired => Stopped::Expired,
        }
    };
    // Both pinned where they are made (moved, they would be copied with what they hold), and
    // polled handler first, as a biased select: a handler that finishes as a watcher fires
    // finishes.
    let outcome = {
        let mut handler = std::pin::pin!(handler);
        let mut watch = std::pin::pin!(watch);
        let ended = std::future::poll_fn(|cx| match handler.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Ok(r)),
            Poll::Pending => watch.as_mut().poll(cx).map(Err),
        })
        .await;
        match ended {
            Ok(Ok(o)) => o,
            Ok(Err(panic)) => {
                shared.counters.panics.fetch_add(1, Relaxed);
                let message = format!("handler panicked: {}", panic.message);
                tracing::error!(
                    handler = &*route.name,
                    event_id = ev.id(),
                    location = panic.location.as_deref(),
                    backtrace = panic.backtrace.as_deref(),
                    "{message}"
                );
                Outcome::Term(HandlerError::with_code(code::PANIC, message))
            }
            Err(Stopped::Shutdown) => Outcome::Retry {
                after: Duration::ZERO,
                error: HandlerError::with_code(
                    code::CANCELLED,
                    "the runtime shut down before the handler finished",
                ),
            },
            Err(Stopped::GivenUp) => Outcome::Retry {
                after: Duration::ZERO,
                error: HandlerError::with_code(code::CANCELLED, "the caller gave up"),
            },
            Err(Stopped::Expired) => {
                if let Some(cancel) = &cancel {
                    cancel.cancel();
                }
                timeout()
            }
        }
    };
    Finished {
        outcome,
        handler: &route.name,
        started_ns: started,
        finished_ns: clock(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::*;

    /// The largest event future `dispatch_slot` built in this test process.
    pub(super) static EVENT_FUTURE_SIZE: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    /// What an event's future may weigh: a block a thread keeps (crate::spare). Past it, an
    /// event that starts on its taker's thread would take memory from the allocator, which
    /// for a future past 1032 bytes is glibc's slow path, as dear as the rest of a trivial
    /// handler's run (measured when the future was 1.7 KiB). Every byte is also copied when a
    /// task handler's event moves into its task.
    const EVENT_FUTURE_BUDGET: usize = crate::spare::ROOM;

    #[test]
    fn an_events_future_fits_a_spare_block() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("echo.inline", b"x"));
        let done = next_completion(&rt);
        release(&rt, done.reply_slot);
        let size = EVENT_FUTURE_SIZE.load(Relaxed);
        assert!(
            size > 0 && size <= EVENT_FUTURE_BUDGET,
            "an event's future is {size} bytes"
        );
        assert_whole(&mut rt);
    }

    struct Gauge {
        active: Arc<std::sync::atomic::AtomicUsize>,
        peak: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Handler for Gauge {
        async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
            let now = self.active.fetch_add(1, Relaxed) + 1;
            self.peak.fetch_max(now, Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.active.fetch_sub(1, Relaxed);
            Outcome::Ack
        }
    }

    /// A future that, when dropped, records whether what it borrows from is still kept.
    struct Borrower {
        kept: std::sync::Weak<()>,
        alive_at_drop: Arc<std::sync::atomic::AtomicBool>,
    }
    impl Future for Borrower {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }
    impl Drop for Borrower {
        fn drop(&mut self) {
            let alive = self.kept.upgrade().is_some();
            self.alive_at_drop.store(alive, Relaxed);
        }
    }

    // A spawned event's future borrows the runtime (dispatch_slot): the task must drop the
    // future while its count still keeps the runtime alive, cancelled or not.
    #[test]
    fn a_kept_future_is_dropped_before_what_keeps_it_alive() {
        let keep = Arc::new(());
        let alive_at_drop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = Kept::new(
            Borrower {
                kept: Arc::downgrade(&keep),
                alive_at_drop: alive_at_drop.clone(),
            },
            &keep,
        );
        drop(keep); // the task's count is now the only one
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.spawn(task);
        rt.block_on(tokio::task::yield_now());
        handle.abort();
        drop(rt);
        assert!(
            alive_at_drop.load(Relaxed),
            "the future outlived the count that keeps what it borrows"
        );
    }

    #[test]
    fn inline_handlers_complete_on_the_poller_or_move_to_a_task() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut rt = runtime_with(|reg| {
            reg.register_inline("gate.inline", "gate-inline", Gate(gate.clone()));
        });
        submit(&rt, 0, &envelope("echo.inline", b"quick"));
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"quick"[..])
        );
        release(&rt, done.reply_slot);
        // Waits on a timer: moves into a task at its first await and still completes.
        submit(&rt, 1, &envelope("nap.inline", b"slow"));
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"slow");
        release(&rt, done.reply_slot);
        // Waits for the test: the next inline handler completes meanwhile.
        submit(&rt, 1, &envelope("gate.inline", b"slow"));
        submit(&rt, 2, &envelope("echo.inline", b"fast"));
        let first = next_completion(&rt);
        assert_eq!(
            first.reply, b"fast",
            "a waiting inline handler must not hold up the next"
        );
        gate.notify_one();
        let second = next_completion(&rt);
        assert_eq!(second.reply, b"slow");
        release(&rt, first.reply_slot);
        release(&rt, second.reply_slot);
        // A panic inline is contained like one in a task.
        submit(&rt, 3, &envelope("boom.inline", b""));
        let done = next_completion(&rt);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            code::PANIC
        );
        release(&rt, done.reply_slot);
        // An inline handler that never finishes is cancelled at shutdown, never lost.
        submit(&rt, 0, &envelope("forever.inline", b""));
        wait_until("the poller to take the sixth event", || {
            rt.stats().received >= 6
        });
        rt.shutdown(Duration::from_millis(20));
        expect_cancelled(&rt);
        assert_no_buffer_held(&rt);
    }

    #[test]
    fn go_may_name_the_handler_whatever_the_event_type() {
        let mut rt = runtime();
        let types = rt
            .event_types()
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>();
        let echo = types.iter().position(|t| t == "echo").unwrap() as u32 + 1;
        // A wildcard route in Go ("order.*" -> echo) sends types Rust has no handler for.
        submit_to(&rt, 0, &envelope("order.created", b"routed"), echo);
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"routed"[..])
        );
        release(&rt, done.reply_slot);
        // An index past the handlers is refused, not guessed.
        submit_to(&rt, 1, &envelope("echo", b"x"), 999);
        let done = next_completion(&rt);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            code::NO_ROUTE
        );
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    /// Replies with the name its context gives, after a progress record through the
    /// context's completion side, and waits first when the payload says so.
    struct Named;
    impl Handler for Named {
        async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
            if ev.data() == b"wait" {
                tokio::task::yield_now().await;
            }
            cx.in_progress(Duration::from_secs(1)).await;
            Outcome::Reply(cx.handler_name().as_bytes().to_vec())
        }
    }

    // The context lends the route's name and the runtime's completion side rather than
    // counting references to them: both reach the handler whether it runs inline or in a
    // task, and the same route serves event after event.
    #[test]
    fn the_context_lends_the_routes_name_and_the_completion_side() {
        let mut rt = runtime_with(|reg| {
            reg.register_inline("named.inline", "named-inline", Named)
                .register("named", "named-task", Named);
        });
        for (i, (ty, data, name)) in [
            ("named.inline", &b"now"[..], "named-inline"),
            ("named.inline", b"wait", "named-inline"),
            ("named", b"now", "named-task"),
            ("named", b"wait", "named-task"),
        ]
        .into_iter()
        .enumerate()
        {
            submit(&rt, i as u32, &envelope(ty, data));
            let progress = next_completion(&rt);
            assert_eq!(progress.kind, TANDEM_OUTCOME_IN_PROGRESS, "{ty} {data:?}");
            let done = next_completion(&rt);
            assert_eq!(
                (done.kind, done.reply.as_slice()),
                (TANDEM_OUTCOME_ACK, name.as_bytes()),
                "{ty} {data:?}"
            );
            release(&rt, done.reply_slot);
        }
        assert_whole(&mut rt);
    }

    #[test]
    fn the_delivery_deadline_cancels_the_handler_as_a_timeout() {
        let mut rt = runtime();
        submit_delivery(&rt, 0, &envelope("forever", b""), 0, due_in(20));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_RETRY);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            code::TIMEOUT
        );
        release(&rt, done.reply_slot);
        // A deadline already past: refused at once, the handler never runs.
        let past = Delivery {
            attempt: 1,
            deadline: Some(1),
            waited: false,
            timed: true,
            shadow: false,
            cancellable: false,
        };
        submit_delivery(&rt, 1, &envelope("echo", b""), 0, past);
        let done = next_completion(&rt);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            code::TIMEOUT
        );
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    /// The handler is polled before what would end it early, as a biased select would: one
    /// that finishes without waiting finishes even once the runtime's shutdown has fired,
    /// and one that waits is then cancelled, retryable.
    #[test]
    fn a_handler_that_finishes_at_once_wins_over_a_fired_shutdown() {
        let mut rt = runtime();
        rt.shared.cancel.cancel();
        submit(&rt, 0, &envelope("echo.inline", b"x"));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_ACK);
        assert_eq!(done.reply, b"x");
        release(&rt, done.reply_slot);
        submit(&rt, 1, &envelope("forever", b""));
        expect_cancelled(&rt);
        assert_whole(&mut rt);
    }

    struct Facts;
    impl Handler for Facts {
        async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
            Outcome::Reply(format!("{} {:?}", ev.attempt(), ev.deadline()).into_bytes())
        }
    }

    #[test]
    fn the_slot_header_not_the_envelope_gives_attempt_and_deadline() {
        let mut reg = Registry::new();
        reg.register("facts", "facts", Facts);
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        // The envelope says attempt 9 and a deadline long past; the header of this delivery
        // says attempt 2 and none: the handler runs and sees the header's.
        let stale = envelope::encode_to_vec(&Envelope {
            id: "1",
            source: "/test",
            ty: "facts",
            specversion: "1.0",
            attempt: 9,
            deadline: Some(1),
            ..Envelope::default()
        });
        let second = Delivery {
            attempt: 2,
            deadline: None,
            waited: false,
            timed: true,
            shadow: false,
            cancellable: false,
        };
        submit_delivery(&rt, 0, &stale, 0, second);
        let done = next_completion(&rt);
        assert_eq!(
            (done.kind, done.reply.as_slice()),
            (TANDEM_OUTCOME_ACK, &b"2 None"[..])
        );
        release(&rt, done.reply_slot);
        let due = now_ns() as i64 + 60_000_000_000;
        let third = Delivery {
            attempt: 3,
            deadline: Some(due),
            waited: false,
            timed: true,
            shadow: false,
            cancellable: false,
        };
        submit_delivery(&rt, 1, &stale, 0, third);
        let done = next_completion(&rt);
        assert_eq!(done.reply, format!("3 Some({due})").into_bytes());
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }

    #[test]
    fn a_route_limit_bounds_its_concurrent_events() {
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut reg = Registry::new();
        reg.register(
            "gauge",
            "gauge",
            Gauge {
                active: Arc::default(),
                peak: peak.clone(),
            },
        )
        .limit("gauge", 1);
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        for slot in 0..4 {
            submit(&rt, slot, &envelope("gauge", b""));
        }
        for _ in 0..4 {
            assert_eq!(next_completion(&rt).kind, TANDEM_OUTCOME_ACK);
        }
        assert_eq!(peak.load(Relaxed), 1, "the limit of 1 was exceeded");
        assert_whole(&mut rt);
    }

    #[test]
    fn the_deadline_fires_the_events_cancellation_token() {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut reg = Registry::new();
        let watcher = Watcher {
            started: started.clone(),
            fired: fired.clone(),
        };
        reg.register("watch", "watch", watcher);
        let mut rt = Runtime::new(small(), reg).unwrap();
        rt.start().unwrap();
        // The handler must start (and spawn its watcher) before the deadline. On a loaded
        // machine it may not; then the event times out without running, and it is tried
        // again with a deadline four times as far.
        let mut ms = 250;
        loop {
            submit_delivery(&rt, 0, &envelope("watch", b""), 0, due_in(ms));
            let done = next_completion(&rt);
            assert_eq!(
                envelope::decode_error(&done.reply).unwrap().code,
                code::TIMEOUT
            );
            release(&rt, done.reply_slot);
            if started.load(Relaxed) {
                break;
            }
            ms *= 4;
            assert!(
                ms <= 16_000,
                "the handler never started before its deadline"
            );
        }
        wait_until("the event's token to fire", || fired.load(Relaxed));
        assert_whole(&mut rt);
    }

    #[test]
    fn panic_becomes_terminal_error_envelope() {
        let mut rt = runtime();
        submit(&rt, 0, &envelope("boom", b""));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        let err = envelope::decode_error(&done.reply).expect("error envelope");
        assert_eq!(
            (err.code, err.runtime, err.handler),
            (code::PANIC, "rust", "boom")
        );
        assert!(err.message.contains("boom"), "{}", err.message);
        release(&rt, done.reply_slot);
        // Still serving after the panic.
        submit(&rt, 1, &envelope("echo", b"alive"));
        let done = next_completion(&rt);
        assert_eq!(done.reply, b"alive");
        release(&rt, done.reply_slot);
        assert_eq!(assert_whole(&mut rt).panics, 1);
    }

    #[test]
    fn malformed_and_unrouted_events_are_terminal() {
        let mut rt = runtime();
        submit(&rt, 0, &[0xa1, 0x00]);
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            code::DECODE
        );
        release(&rt, done.reply_slot);

        submit(&rt, 1, &envelope("nobody.home", b""));
        let done = next_completion(&rt);
        assert_eq!(done.kind, TANDEM_OUTCOME_TERM);
        assert_eq!(
            envelope::decode_error(&done.reply).unwrap().code,
            code::NO_ROUTE
        );
        release(&rt, done.reply_slot);
        assert_whole(&mut rt);
    }
}
