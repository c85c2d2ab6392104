//! tandem's core: the shared rings, the envelope, the tokio runtime and the C exports.
//!
//! Go hands CBOR event envelopes to this runtime through a submission ring in shared memory;
//! each event runs as a tokio task in the [`Handler`] registered for its type, and its outcome
//! returns through a completion ring. See docs/ for the boundary contract.
//!
//! A crate that builds the staticlib or cdylib Go links names its registration function:
//!
//! ```ignore
//! fn register(reg: &mut tandem::Registry) { reg.register("demo.echo", "echo", Echo); }
//! tandem::register_handlers!(register);
//! ```
#![warn(missing_docs, unreachable_pub)]
#![allow(non_camel_case_types)]

pub mod code;
mod completion;
mod config;
mod dispatch;
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
mod ring;
mod runtime;
mod shared;
mod shm;
mod slots;
mod stats;
mod sync;
#[cfg(all(test, not(loom)))]
mod testing;
mod wake;

pub use config::{Config, Error};
pub use handler::{Context, Event, Handler, Registry};
pub use kick::Kicked;
pub use outcome::{EmitError, HandlerError, Outcome};
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use ring::BenchRing;
pub use runtime::Runtime;
pub use stats::Stats;

/// Names the function that registers this library's handlers; the C exports call it when a
/// runtime is created. Use it exactly once, in the crate that builds the staticlib/cdylib.
#[macro_export]
macro_rules! register_handlers {
    ($f:path) => {
        #[unsafe(no_mangle)]
        fn tandem_register_handlers(registry: &mut $crate::Registry) {
            $f(registry)
        }
    };
}
