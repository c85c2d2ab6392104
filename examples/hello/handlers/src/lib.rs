//! hello's Rust handlers, linked into the Go binary with tandem's core.

use std::time::Duration;

use tandem::{Context, Event, Handler, Outcome, Registry};

/// Replies with the payload upper-cased, after an await: each event runs as a tokio task.
pub struct Shout;

impl Handler for Shout {
    async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let loud = String::from_utf8_lossy(ev.data()).to_uppercase();
        Outcome::Reply(format!("Rust handler hello.shout: HELLO, {loud}!").into_bytes())
    }
}

/// Routes this crate's event types to its handlers; the Go side reaches them by type.
pub fn register(reg: &mut Registry) {
    reg.register("hello.shout", "shout", Shout);
}

tandem::register_handlers!(register);
