//! What a Rust handler implements and what it receives: [`Handler`], [`Event`], [`Context`],
//! and the [`Registry`] that routes event types to handlers. A handler's [`Context`] reaches
//! the runtime only through its completion side (progress records, emitted events, calls).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::completion::{Completion, Completions, now_ns};
use crate::envelope::{Envelope, Extensions};
use crate::outcome::{EmitError, HandlerError, Outcome};
use crate::reply::{CallError, Reply};
use crate::slots::Delivery;
use crate::spare::{DynInBlock, InBlock};

/// An async event handler run by the tokio runtime, one task per event.
///
/// Implementations are shared by all tasks (`&self`), so they must be `Send + Sync`; per-event
/// state lives in the future. Write `async fn handle(...)` in the impl.
///
/// ```
/// use tandem::{Context, Event, Handler, Outcome};
/// struct Echo;
/// impl Handler for Echo {
///     async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
///         Outcome::Reply(ev.data().to_vec())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles one event. The event's bytes stay valid until the returned future finishes;
    /// the runtime releases them to Go with the completion.
    fn handle(&self, ev: &Event<'_>, cx: &Context) -> impl Future<Output = Outcome> + Send;

    /// Wires dependencies once, before warm-up. The runtime inits its handlers one by one,
    /// in event-type order, on the thread that starts it. An error (or a panic) fails `Start`
    /// naming this handler: the handlers already initialised are closed, in reverse order.
    fn init(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Primes caches and connections before traffic, once every handler's init succeeded;
    /// one by one, in event-type order, on the runtime's tokio. No event arrives before every
    /// handler of both runtimes has warmed up (Go's `/readyz` says so). An error (or a panic)
    /// fails `Start` naming this handler, and every handler that was initialised is closed,
    /// in reverse order.
    fn warm_up(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// Called exactly once for each handler whose init succeeded: at shutdown after the last
    /// event, or when `Start` fails. Handlers close in the reverse of their init order. A
    /// panic here is contained.
    fn close(&self) {}
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Handler`], used by the registry.
pub(crate) trait DynHandler: Send + Sync + 'static {
    fn call<'a>(&'a self, ev: &'a Event<'_>, cx: &'a Context) -> DynInBlock<'a, Outcome>;
    fn init(&self) -> Result<(), HandlerError>;
    fn warm_up(&self) -> BoxFuture<'_, Result<(), HandlerError>>;
    fn close(&self);
}

impl<H: Handler> DynHandler for H {
    fn call<'a>(&'a self, ev: &'a Event<'_>, cx: &'a Context) -> DynInBlock<'a, Outcome> {
        InBlock::handler(|| self.handle(ev, cx)).erased()
    }
    fn init(&self) -> Result<(), HandlerError> {
        Handler::init(self)
    }
    fn warm_up(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(Handler::warm_up(self))
    }
    fn close(&self) {
        Handler::close(self)
    }
}

/// The handlers of one runtime, by exact event type, filled by the function a library names
/// with [`register_handlers!`](crate::register_handlers). Built once per runtime, before it
/// starts; it is not shared while filled.
///
/// ```
/// use tandem::{Context, Event, Handler, Outcome, Registry};
///
/// struct Upper;
/// impl Handler for Upper {
///     async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
///         Outcome::Reply(ev.data().to_ascii_uppercase())
///     }
/// }
/// struct Resize;
/// impl Handler for Resize {
///     async fn handle(&self, _ev: &Event<'_>, _cx: &Context) -> Outcome {
///         Outcome::Ack
///     }
/// }
///
/// let mut reg = Registry::new();
/// reg.register_inline("text.upper", "upper", Upper) // tiny: runs on the poller
///     .register("image.resize", "resize", Resize) // a task per event
///     .limit("image.resize", 4); // at most 4 at once
/// assert_eq!(reg.event_types(), ["image.resize", "text.upper"]);
/// ```
#[derive(Default)]
pub struct Registry {
    routes: HashMap<String, Route>,
    by_index: Vec<Route>,
}

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn DynHandler>,
    /// Run on the poller until the handler first waits, instead of in a task of its own.
    pub(crate) inline: bool,
    /// At most this many events of the route run at once (None: no limit).
    pub(crate) limit: Option<Arc<tokio::sync::Semaphore>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Routes events of type `event_type` to `handler`, named `name` in errors, logs and metrics.
    /// A second registration of the same type replaces the first.
    pub fn register<H: Handler>(&mut self, event_type: &str, name: &str, handler: H) -> &mut Self {
        self.insert(event_type, name, handler, false)
    }

    /// Like [`Registry::register`], for tiny handlers that usually finish without waiting:
    /// each event runs on the submission poller until the handler first awaits something
    /// pending, and only then moves into a task of its own. That saves a task spawn and a
    /// scheduling hop per event, but a handler that computes for long delays every event
    /// behind it: register CPU-bound handlers with `register`.
    pub fn register_inline<H: Handler>(
        &mut self,
        event_type: &str,
        name: &str,
        handler: H,
    ) -> &mut Self {
        self.insert(event_type, name, handler, true)
    }

    fn insert<H: Handler>(
        &mut self,
        event_type: &str,
        name: &str,
        handler: H,
        inline: bool,
    ) -> &mut Self {
        self.routes.insert(
            event_type.to_owned(),
            Route {
                name: Arc::from(name),
                handler: Arc::new(handler),
                inline,
                limit: None,
            },
        );
        self
    }

    /// Lets at most `max` events of `event_type` run at once (tokio tasks waiting for a
    /// permit hold no thread). Call after registering the type; 0 removes the limit.
    pub fn limit(&mut self, event_type: &str, max: usize) -> &mut Self {
        if let Some(route) = self.routes.get_mut(event_type) {
            route.limit = (max > 0).then(|| Arc::new(tokio::sync::Semaphore::new(max)));
        }
        self
    }

    /// The event types with a handler, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    pub(crate) fn route(&self, event_type: &str) -> Option<&Route> {
        self.routes.get(event_type)
    }

    /// The handler at `index` in `event_types` order.
    pub(crate) fn route_at(&self, index: usize) -> Option<&Route> {
        self.by_index.get(index)
    }

    /// Freezes the registration: fixes the index order Go addresses handlers by.
    pub(crate) fn seal(&mut self) {
        let mut types: Vec<&String> = self.routes.keys().collect();
        types.sort_unstable();
        self.by_index = types.into_iter().map(|t| self.routes[t].clone()).collect();
    }

    /// The handlers in event-type order, once sealed: the order of their init and warm-up
    /// (and, reversed, of their close).
    pub(crate) fn in_order(&self) -> &[Route] {
        &self.by_index
    }
}

/// One event, borrowed from its request slot in the shared arena (or, for an event routed
/// inside Rust, from its owned envelope). Handlers see it by reference; the slot is released to
/// Go with the completion, which the runtime publishes only after the handler's future, and
/// every borrow of this value, has ended: the lifetime `'a` is the slot's. Read-only and
/// `Sync`: the futures of one handler may read it concurrently.
///
/// It borrows its decoded envelope too, which the event's future keeps beside it: decoded
/// into its place there, the envelope (some 300 bytes) is never copied on its way to the
/// handler.
pub struct Event<'a> {
    env: &'a Envelope<'a>,
    delivery: Delivery,
}

impl<'a> Event<'a> {
    pub(crate) fn new(env: &'a Envelope<'a>, delivery: Delivery) -> Event<'a> {
        Event { env, delivery }
    }

    /// Whether Go wants this delivery's handler time (`TANDEM_DELIVERY_TIMED`).
    pub(crate) fn timed(&self) -> bool {
        self.delivery.timed
    }

    /// Whether this delivery is a shadow's copy (`TANDEM_DELIVERY_SHADOW`).
    pub(crate) fn shadow(&self) -> bool {
        self.delivery.shadow
    }

    /// The whole decoded envelope, borrowing the event. Its `attempt` and `deadline` are the
    /// submitter's; [`Event::attempt`] and [`Event::deadline`] are this delivery's.
    pub fn envelope(&self) -> &Envelope<'a> {
        self.env
    }
    /// CloudEvents `id`.
    pub fn id(&self) -> &str {
        self.env.id
    }
    /// CloudEvents `source`.
    pub fn source(&self) -> &str {
        self.env.source
    }
    /// CloudEvents `type`: the route key.
    pub fn event_type(&self) -> &str {
        self.env.ty
    }
    /// The payload, without a copy.
    pub fn data(&self) -> &[u8] {
        self.env.data
    }
    /// This delivery's number, from 1: 1 on the first delivery, 2 on the first retry. Go
    /// counts and writes it beside the envelope for each delivery; an event emitted and
    /// routed inside Rust is delivered as its envelope's `attempt`, or 1 when that is unset.
    pub fn attempt(&self) -> u32 {
        self.delivery.attempt
    }
    /// The deadline this delivery arrived with, Unix nanoseconds, if it has one: Go's,
    /// written beside the envelope for each delivery (an event routed inside Rust carries its
    /// envelope's). The runtime cancels the handler when it passes, unless
    /// [`Context::in_progress`] pushed it back (which this value does not show).
    pub fn deadline(&self) -> Option<i64> {
        self.delivery.deadline
    }
    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.env.correlationid
    }

    /// A follow-up event of this one, to emit with [`Context::emit`]: it carries this event's
    /// correlation id (or this event's id when it has none), names this event as its cause,
    /// continues its trace, and comes from the same source. Every field may be changed before
    /// emitting.
    pub fn follow_up<'b>(&'b self, ty: &'b str, id: &'b str, data: &'b [u8]) -> Envelope<'b> {
        Envelope {
            id,
            source: self.env.source,
            ty,
            specversion: "1.0",
            correlationid: Some(self.env.correlationid.unwrap_or(self.env.id)),
            causationid: Some(self.env.id),
            traceparent: self.env.traceparent,
            tracestate: self.env.tracestate,
            data,
            ..Envelope::default()
        }
    }
    /// The extension attributes.
    pub fn extensions(&self) -> Extensions<'_> {
        self.env.extensions
    }
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.env.id)
            .field("type", &self.env.ty)
            .field("len", &self.env.data.len())
            .finish()
    }
}

/// The envelope of the event a [`Context`] belongs to, its lifetime erased so that `Context`
/// needs none: a call fills in its correlation, causation and trace from it.
#[derive(Clone, Copy)]
pub(crate) struct CallerRef(std::ptr::NonNull<Envelope<'static>>);

// SAFETY: it stands for a `&Envelope`, which is Send and Sync (an envelope only borrows bytes).
unsafe impl Send for CallerRef {}
// SAFETY: as above.
unsafe impl Sync for CallerRef {}

impl CallerRef {
    /// # Safety
    /// `env` must stay where it is, alive, for as long as any `Context` holding the result.
    pub(crate) unsafe fn new(env: &Envelope<'_>) -> CallerRef {
        CallerRef(std::ptr::NonNull::from(env).cast())
    }

    fn get(&self) -> &Envelope<'_> {
        // SAFETY: `new`'s contract keeps the envelope alive and in place while the Context
        // lives, and the borrow returned is one of the Context; the lifetime is shortened back
        // to it.
        unsafe { self.0.cast::<Envelope<'_>>().as_ref() }
    }
}

/// A borrow with its lifetime erased, so that `Context` needs none: what `Context` reaches in
/// the runtime (the route's name, the completion side) is lent, not counted. Cloning an `Arc`
/// for every event wrote words that every core's events write; the runtime and its routes
/// outlive every `Context` anyway, which lives in its event's future (see `dispatch`).
pub(crate) struct Lent<T: ?Sized>(std::ptr::NonNull<T>);

// SAFETY: it stands for a `&T`, which is Send when `T` is Sync.
unsafe impl<T: ?Sized + Sync> Send for Lent<T> {}
// SAFETY: as above; `&T` is Sync when `T` is.
unsafe impl<T: ?Sized + Sync> Sync for Lent<T> {}

impl<T: ?Sized> Lent<T> {
    /// # Safety
    /// `r` must stay alive for as long as the result or any `Context` holding it.
    pub(crate) unsafe fn new(r: &T) -> Lent<T> {
        Lent(std::ptr::NonNull::from(r))
    }

    pub(crate) fn get(&self) -> &T {
        // SAFETY: `new`'s contract keeps the referent alive while this lives, and the borrow
        // returned is one of `self`.
        unsafe { self.0.as_ref() }
    }
}

/// What a handler sees besides the event: its name, the cancellation signal, and the way
/// out for progress records, emitted events and calls. Lent to one handler call; it is
/// `Sync`, so the futures of one handler may share it and call its methods concurrently.
pub struct Context {
    /// The event being handled, for what a call carries over from it.
    pub(crate) caller: CallerRef,
    /// The route's name, lent by the route the runtime holds.
    pub(crate) handler: Lent<str>,
    /// The event's own token (a child of the runtime's) when it has a deadline; else the
    /// runtime's, reached through `completions`, so an event without one clones no token.
    pub(crate) cancel: Option<CancellationToken>,
    /// Where progress records and emitted events go: the runtime's completion side, the only
    /// part of the runtime a handler reaches, lent by the runtime.
    pub(crate) completions: Lent<Arc<Completions>>,
    /// The event's token on the rings (0 for a direct call), for progress records.
    pub(crate) token: u64,
    /// The event's deadline in Unix ns, which `in_progress` may push back.
    pub(crate) deadline: Option<Arc<AtomicI64>>,
    /// A shadow's copy: `emit` discards (`TANDEM_DELIVERY_SHADOW`).
    pub(crate) shadow: bool,
}

impl Context {
    /// The name the handler was registered under.
    pub fn handler_name(&self) -> &str {
        self.handler.get()
    }
    /// Whether this run is a shadow's copy of an event: Go compares its result with the
    /// handler the route sends the event to, then discards it. What the handler emits is
    /// discarded; a handler may skip its other side effects too.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }
    /// Fires when the runtime gives up on this event: at the event's deadline (the route's
    /// timeout), or at shutdown past its grace. The runtime stops polling the handler's future
    /// then; a handler that spawns work of its own should watch this token.
    pub fn cancellation(&self) -> &CancellationToken {
        self.cancel
            .as_ref()
            .unwrap_or_else(|| self.completions.get().cancel())
    }

    /// Tells the runtime the handler is still working: pushes the event's deadline back to
    /// `extend` from now (never earlier than it was), and tells Go with a progress record.
    /// Without a deadline (no route timeout, none from the submitter) there is nothing to
    /// extend and only the record is sent.
    pub async fn in_progress(&self, extend: Duration) {
        if let Some(deadline) = &self.deadline {
            let until =
                (now_ns() as i64).saturating_add(extend.as_nanos().min(i64::MAX as u128) as i64);
            deadline.fetch_max(until, Relaxed);
        }
        if self.token != 0 {
            self.completions
                .get()
                .publish(Completion::progress(self.token, extend))
                .await;
        }
    }

    /// Emits a follow-up event (see [`Event::follow_up`]): it goes to Go in a reply slot on
    /// the completion ring, and Go routes it like a submitted one, to a handler in either
    /// runtime, with retries and dead letters. An event type Go routes to a Rust handler with
    /// no policy of Go's own stays in Rust instead. Waits (without blocking a thread) while
    /// every reply slot is lent to Go: emitters are throttled, never dropped. Returns once the
    /// event is published. A shadow's copy ([`Context::is_shadow`]) emits nothing: the event
    /// is checked and discarded, and `emit` returns `Ok`.
    pub async fn emit(&self, ev: &Envelope<'_>) -> Result<(), EmitError> {
        for (what, v) in [("an id", ev.id), ("a source", ev.source), ("a type", ev.ty)] {
            if v.is_empty() {
                return Err(EmitError::Invalid(what));
            }
        }
        if self.shadow {
            return Ok(());
        }
        self.completions.get().emit(ev).await
    }

    /// Sends `ev` to the handler of its type, in either runtime, and waits for its reply:
    /// request/reply from inside a handler, as `tandem.Call` is for a Go handler.
    ///
    /// The called event carries over, where `ev` leaves them unset, this event's correlation
    /// id (or its id when it has none), this event's id as its causation id, and its trace
    /// context (`traceparent`, `tracestate`): build it with [`Event::follow_up`] or by hand.
    /// Its deadline is the earlier of its own and this event's (as [`Context::in_progress`]
    /// left it), so the callee never outlives the caller's budget.
    ///
    /// Where it runs: an event type Go routes to a Rust handler with no policy of Go's own
    /// (a local route) runs in that handler inside Rust, in this task, and its outcome comes
    /// back without a trip through Go. Otherwise, or when that local run fails, the event
    /// crosses to Go (`TANDEM_CQE_CALL`, in a reply slot the call holds until its outcome
    /// comes back), and Go runs its whole delivery: policies, retries, dead letters, a
    /// handler in either runtime. The final outcome comes back: the reply, or the callee's
    /// error envelope ([`CallError::Failed`]).
    ///
    /// Dropping the returned future (this event's deadline, shutdown, a `select!` it lost)
    /// stops the wait and tells Go, which ends a Go callee's context, has a Rust callee's
    /// cancellation token fire, and retries neither; a local callee is dropped with the call.
    /// A callee that already ran keeps its effects, and its outcome is discarded.
    ///
    /// A call through Go holds the caller's request slot and one reply slot until its outcome
    /// comes back. At most half the request slots and half the reply slots are held so; a
    /// call beyond that fails at once with [`CallError::Overloaded`] rather than wait, since a
    /// caller waiting for room holds a slot a callee may need.
    ///
    /// ```
    /// use tandem::{CallError, Context, Event, Handler, HandlerError, Outcome};
    ///
    /// /// Asks the `text.upper` handler (Go's or Rust's) and replies with its answer.
    /// struct Shout;
    /// impl Handler for Shout {
    ///     async fn handle(&self, ev: &Event<'_>, cx: &Context) -> Outcome {
    ///         let id = format!("{}/upper", ev.id());
    ///         match cx.call(&ev.follow_up("text.upper", &id, ev.data())).await {
    ///             Ok(reply) => Outcome::Reply([reply.data(), b"!"].concat()),
    ///             Err(CallError::Failed(f)) => Outcome::Term(HandlerError::with_code("upstream", f.to_string())),
    ///             Err(e) => Outcome::Retry {
    ///                 after: std::time::Duration::from_millis(50),
    ///                 error: HandlerError::with_code("upstream", e.to_string()),
    ///             },
    ///         }
    ///     }
    /// }
    /// ```
    pub async fn call(&self, ev: &Envelope<'_>) -> Result<Reply, CallError> {
        for (what, v) in [("an id", ev.id), ("a source", ev.source), ("a type", ev.ty)] {
            if v.is_empty() {
                return Err(CallError::Invalid(what));
            }
        }
        let caller = self.caller.get();
        let mut req = *ev;
        req.correlationid = req
            .correlationid
            .or(Some(caller.correlationid.unwrap_or(caller.id)));
        req.causationid = req.causationid.or(Some(caller.id));
        if req.traceparent.is_none() {
            (req.traceparent, req.tracestate) = (caller.traceparent, caller.tracestate);
        }
        let own = self.deadline.as_ref().map(|d| d.load(Relaxed));
        req.deadline = match (req.deadline, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let due = req.deadline;
        if due.is_some_and(|d| d <= now_ns() as i64) {
            return Err(CallError::DeadlineExceeded);
        }
        let expired = async {
            match due {
                Some(d) => {
                    let left = d.saturating_sub(now_ns() as i64).max(0) as u64;
                    tokio::time::sleep(Duration::from_nanos(left)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.completions.get().call(&req) => r,
            _ = self.cancellation().cancelled() => Err(if self.completions.get().cancel().is_cancelled() {
                CallError::ShuttingDown
            } else {
                CallError::Cancelled
            }),
            _ = expired => Err(CallError::DeadlineExceeded),
        }
    }
}
