//! tandem's core: the shared rings, the envelope, the tokio runtime and the C exports.
//!
//! Go hands CBOR event envelopes to this runtime through a submission ring in shared memory;
//! each event runs as a tokio task in the [`Handler`] registered for its type, and its outcome
//! returns through a completion ring. See docs/ for the boundary contract.
//!
//! # Your own handlers
//!
//! A user's crate is tandem's core plus the user's handlers, built as a `staticlib` (linked
//! into the Go binary) and a `cdylib` (loaded by a Go binary built without cgo); `tandem new`
//! writes one. It depends on this crate, from the Go module's directory, with the `exports`
//! feature, implements [`Handler`], and names the function that fills the [`Registry`] with
//! [`register_handlers!`]:
//!
//! ```
//! use std::time::Duration;
//! use tandem::{Context, Event, Handler, HandlerError, Outcome, Registry};
//!
//! /// Prices an order: replies with the price of the quantity in the payload.
//! struct PriceOrder;
//!
//! impl Handler for PriceOrder {
//!     async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
//!         let Ok(qty) = std::str::from_utf8(ev.data()).unwrap_or("").parse::<u64>() else {
//!             // A bad payload will not get better: dead-letter it.
//!             return Outcome::Term(HandlerError::with_code("invalid_input", "quantity is not a number"));
//!         };
//!         tokio::time::sleep(Duration::from_millis(1)).await; // a price service, say
//!         Outcome::Reply((qty * 250).to_string().into_bytes())
//!     }
//! }
//!
//! fn register(reg: &mut Registry) {
//!     reg.register("order.price", "price-order", PriceOrder).limit("order.price", 64);
//! }
//!
//! tandem::register_handlers!(register);
//! # fn main() {
//! #     let mut reg = Registry::new();
//! #     register(&mut reg);
//! #     assert_eq!(reg.event_types(), ["order.price"]);
//! # }
//! ```
//!
//! A handler composes with [`Context::emit`] (a follow-up nobody waits for) and
//! [`Context::call`] (request/reply to a handler in either runtime, with the caller's
//! deadline, correlation, causation and trace carried over).
//!
//! The Go side reaches `order.price` by its type (`rt.Call(ctx, &tandem.Event{Type:
//! "order.price", ...})`), or under other types through `Runtime.HandleRust`.
#![warn(missing_docs, unreachable_pub)]
#![allow(non_camel_case_types)]

mod calls;
pub mod code;
mod completion;
mod config;
#[cfg(all(feature = "conform", not(loom)))]
pub mod conform;
mod dispatch;
mod entered;
pub mod envelope;
#[cfg(feature = "exports")]
pub mod ffi;
mod handler;
mod kick;
pub mod layout;
mod local;
mod logs;
mod outcome;
mod panics;
mod poller;
mod reply;
mod ring;
mod runtime;
mod shared;
mod shm;
mod slots;
mod spare;
#[cfg(all(not(loom), any(test, feature = "conform")))]
mod standin;
mod stats;
mod sync;
#[cfg(all(test, not(loom)))]
mod testing;
mod waiters;
mod wake;

pub use completion::Record;
pub use config::{Config, Error, Phase};
pub use handler::{Context, Event, Handler, Registry};
pub use kick::{Kicked, Ran};
pub use outcome::{EmitError, HandlerError, Outcome};
pub use reply::{CallError, CallFailure, Reply};
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use ring::BenchRing;
pub use runtime::{Runtime, State};
pub use stats::Stats;

/// Names the function that registers this library's handlers; the C exports call it when a
/// runtime is created. Use it exactly once, in the crate that builds the staticlib/cdylib
/// (with this crate's `exports` feature, which defines the C exports): it is how a crate of
/// handlers becomes the library Go links.
///
/// The function takes `&mut Registry` and may be any path; it runs once per runtime created.
///
/// ```
/// use tandem::{Context, Event, Handler, Outcome, Registry};
///
/// struct Echo;
/// impl Handler for Echo {
///     async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
///         Outcome::Reply(ev.data().to_vec())
///     }
/// }
///
/// mod handlers {
///     pub fn register(reg: &mut tandem::Registry) {
///         reg.register_inline("echo", "echo", super::Echo);
///     }
/// }
///
/// tandem::register_handlers!(handlers::register);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! register_handlers {
    ($f:path) => {
        #[unsafe(no_mangle)]
        fn tandem_register_handlers(registry: &mut $crate::Registry) {
            $crate::__exports_feature_check();
            $f(registry)
        }
    };
}

/// Without the `exports` feature the crate defines no C export, and a Go build linking the
/// library fails on undefined `tandem_*` symbols far from the cause: register_handlers! calls
/// this, and the deprecation warning names the cause at the crate's own build.
#[cfg(not(feature = "exports"))]
#[doc(hidden)]
#[deprecated(
    note = "tandem::register_handlers! exports nothing without the tandem crate's `exports` feature: tandem = { path = \"...\", features = [\"exports\"] }"
)]
pub fn __exports_feature_check() {}

#[cfg(feature = "exports")]
#[doc(hidden)]
pub fn __exports_feature_check() {}
