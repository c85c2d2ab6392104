//! The sidecar contender: tandem's demo handlers in a process of their own, served over a Unix
//! domain socket. It is what a user would build instead of tandem's shared rings, and the
//! benchmarks in `bench/` measure both against each other with the same handlers and the same
//! envelope bytes.
//!
//! # Wire protocol
//!
//! Every frame starts with its length, a `u32` in big-endian, counting the bytes after it.
//! Integers are big-endian.
//!
//! ```text
//! request   len:u32 | id:u64 | event envelope (CBOR, ffi/envelope.cddl)
//! response  len:u32 | id:u64 | outcome:u8 | reply (outcome 0) or error envelope (1, 2)
//! ```
//!
//! `id` is chosen by the client and returned unchanged; responses come back in completion
//! order, not request order, so a connection may carry many requests at once. The outcome
//! codes are the ABI's (`TANDEM_OUTCOME_ACK`, `_RETRY`, `_TERM`). A frame longer than
//! [`MAX_FRAME`] or shorter than its id is a protocol error, and the connection is closed.
//!
//! # Threads
//!
//! Handlers run on the tandem [`Runtime`]'s own tokio runtime, through
//! [`Runtime::spawn_call`]; the socket I/O runs on a second, smaller tokio runtime that the
//! caller of [`serve`] provides. A handler's completion crosses from one to the other through
//! an unbounded channel per connection, bounded in practice by [`MAX_IN_FLIGHT`].
#![warn(missing_docs, unreachable_pub)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tandem::envelope::{self, ErrorEnvelope};
use tandem::layout::TANDEM_OUTCOME_TERM;
use tandem::{Config, Registry, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The largest frame accepted, its length prefix excluded: the id and a 64 KiB envelope (the
/// largest a default tandem runtime takes) with room to spare.
pub const MAX_FRAME: usize = 16 << 20;

/// Requests one connection may have in flight; the reader stops reading until a response
/// has been written, so a client that never reads its responses cannot grow the server.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Bytes of a request frame's header: length and id.
const REQUEST_HEADER: usize = 4 + 8;
/// Bytes of a response frame's header: length, id and outcome.
const RESPONSE_HEADER: usize = 4 + 8 + 1;

/// Builds and starts a tandem runtime with `tandem_native`'s demo handlers and `workers`
/// tokio workers, for [`serve`].
///
/// The sidecar never uses the runtime's shared rings (a socket replaces them), so the region
/// is made as small as the configuration allows and its poller parks at once and stays parked.
pub fn start_runtime(workers: usize) -> Result<Runtime, tandem::Error> {
    let mut registry = Registry::new();
    tandem_native::register(&mut registry);
    let cfg = Config {
        workers,
        sq_capacity: 2,
        cq_capacity: 1,
        req_slot_size: 256,
        req_slots: 1,
        rep_slot_size: 256,
        rep_slots: 1,
        spin: Duration::ZERO,
        ..Config::default()
    };
    let mut rt = Runtime::new(cfg, registry)?;
    rt.start()?;
    Ok(rt)
}

/// Accepts connections on `listener` and serves each in a task of its own, until accepting
/// fails. Run it on the I/O runtime, not on `rt`'s.
pub async fn serve(listener: UnixListener, rt: Arc<Runtime>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let rt = rt.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, rt).await {
                eprintln!("tandem-sidecar: connection closed: {e}");
            }
        });
    }
}

/// One handler's answer on its way to the writer. The permit goes back once it is written.
struct Response {
    id: u64,
    outcome: u8,
    body: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

/// Serves one connection until the client closes it (every response still owed is written
/// first) or it fails. A clean close by the client is `Ok`.
pub async fn serve_connection(stream: UnixStream, rt: Arc<Runtime>) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_responses(write, rx));
    let read_result = read_requests(read, &rt, tx).await;
    // The writer ends when the reader and every pending handler have dropped their senders,
    // or at its first failed write (a client that went away).
    let write_result = writer.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    read_result.and(write_result)
}

async fn read_requests(
    read: OwnedReadHalf,
    rt: &Runtime,
    tx: mpsc::UnboundedSender<Response>,
) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 << 10, read);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut header = [0u8; REQUEST_HEADER];
    loop {
        match r.read_exact(&mut header[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut header[1..]).await?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if !(8..=MAX_FRAME).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request frame of {len} bytes: want 8..={MAX_FRAME}"),
            ));
        }
        let id = u64::from_be_bytes(header[4..].try_into().expect("8 bytes"));
        let mut envelope_bytes = vec![0u8; len - 8];
        r.read_exact(&mut envelope_bytes).await?;

        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let reply = tx.clone();
        // The handler runs on tandem's workers; `done` is called there, once. A closed
        // channel means the client went away: its answer has nowhere to go.
        let spawned = rt.spawn_call(envelope_bytes, move |outcome, body| {
            let _ = reply.send(Response {
                id,
                outcome: outcome as u8,
                body,
                _permit: permit,
            });
        });
        if let Err(e) = spawned {
            // The runtime is stopping: answer like a refusal, so the client is not left waiting.
            let message = e.to_string();
            let env = ErrorEnvelope {
                code: "unavailable",
                message: &message,
                runtime: "rust",
                ..ErrorEnvelope::default()
            };
            let mut body = vec![0u8; envelope::error_encoded_len(&env)];
            let n = envelope::encode_error_into(&env, &mut body).unwrap_or(0);
            body.truncate(n);
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let _ = tx.send(Response {
                id,
                outcome: TANDEM_OUTCOME_TERM as u8,
                body,
                _permit: permit,
            });
        }
    }
}

/// Writes responses as they come, flushing once the channel has nothing more waiting, so a
/// burst of completions goes out in few writes.
async fn write_responses(
    write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Response>,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 << 10, write);
    while let Some(first) = rx.recv().await {
        write_response(&mut w, &first).await?;
        drop(first);
        while let Ok(next) = rx.try_recv() {
            write_response(&mut w, &next).await?;
        }
        w.flush().await?;
    }
    w.shutdown().await
}

async fn write_response(w: &mut BufWriter<OwnedWriteHalf>, r: &Response) -> io::Result<()> {
    let len = u32::try_from(8 + 1 + r.body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "reply over 4 GiB"))?;
    let mut header = [0u8; RESPONSE_HEADER];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4..12].copy_from_slice(&r.id.to_be_bytes());
    header[12] = r.outcome;
    w.write_all(&header).await?;
    w.write_all(&r.body).await
}
