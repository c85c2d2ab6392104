//! Conformance vectors in `cargo test`, without Go (feature `conform`): a vector file of
//! cases, each an event and the outcome its handler must give it, run against a Rust
//! handler. The file format is the one Go's package conform reads (docs/conformance.md), so
//! one file proves a Go handler and its Rust twin identical: Go runs it with `conform.Run`
//! or `tandem conform`, Rust with [`assert_conforms`].
//!
//! The [`Harness`] runs a real runtime and plays Go's part of the ring protocol: each case's
//! envelope is written into a request slot and published, and the completion read back, so
//! the handler runs as it does under Go, inline or in a task, with panics contained, the
//! reply slot's size enforced and emitted events published (and released unread). Each case
//! is one delivery: a retry is judged as the handler gave it, never redelivered.
//!
//! ```no_run
//! use tandem::{Context, Event, Handler, Outcome, Registry};
//!
//! struct Upper;
//! impl Handler for Upper {
//!     async fn handle(&self, ev: &Event<'_>, _cx: &Context) -> Outcome {
//!         Outcome::Reply(ev.data().to_ascii_uppercase())
//!     }
//! }
//!
//! #[test]
//! fn upper_conforms() {
//!     let mut reg = Registry::new();
//!     reg.register_inline("text.upper", "upper", Upper);
//!     tandem::conform::assert_conforms(reg, "text.upper", "testdata/upper.jsonl");
//! }
//! ```

mod vectors;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

pub use vectors::{Case, CaseEvent, Expect, FORMAT, FileError, FileErrorKind, VERSION, Vectors};

use crate::config::{Config, Error};
use crate::envelope::{self, Envelope, Extensions};
use crate::handler::Registry;
use crate::layout::{
    TANDEM_NO_SLOT, TANDEM_OUTCOME_ACK, TANDEM_OUTCOME_RETRY, TANDEM_OUTCOME_TERM,
};
use crate::runtime::Runtime;
use crate::slots::Delivery;
use crate::standin::{Done, release, submit_delivery, try_completion};

/// How long the harness waits for one case's outcome.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The verdict a handler gave, or a case expects, on one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Acknowledged.
    Ack,
    /// Failed; may succeed on another delivery.
    Retry,
    /// Failed for good.
    Term,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ack => "ack",
            Verdict::Retry => "retry",
            Verdict::Term => "term",
        })
    }
}

/// The outcome a handler gave a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The verdict.
    pub verdict: Verdict,
    /// An Ack's reply (empty when there was none).
    pub reply: Vec<u8>,
    /// A Retry's or Term's error code.
    pub code: String,
    /// A Retry's or Term's error message.
    pub message: String,
}

/// One case's run.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case run.
    pub case: Case,
    /// The handler's outcome; `None` when `error` says why there is none.
    pub got: Option<Got>,
    /// Why the case has no outcome: its event does not fit a request slot, or no outcome
    /// came within [`CASE_TIMEOUT`].
    pub error: Option<String>,
    /// Where `got` differs from the case's expectation, one line each.
    pub mismatches: Vec<String>,
}

impl CaseResult {
    /// Whether the handler gave what the case expects.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
    }

    /// Describes a failed case: the file, line and case first, then one line per
    /// difference; empty when the case passed.
    pub fn diff(&self, file: &str) -> String {
        if self.passed() {
            return String::new();
        }
        let mut s = format!("{file}:{}: case {:?}", self.case.line, self.case.name);
        if let Some(e) = &self.error {
            s += &format!(": no outcome: {e}");
            return s;
        }
        for m in &self.mismatches {
            s += "\n    ";
            s += m;
        }
        s
    }
}

/// The run of a vector file against one handler.
#[derive(Debug, Clone)]
pub struct Report {
    /// The vector file's name.
    pub file: String,
    /// The route (event type) of the handler run.
    pub route: String,
    /// The cases' runs, in file order. A case without an outcome in time ends the run: the
    /// cases after it are not run.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Whether every case passed.
    pub fn ok(&self) -> bool {
        self.results.iter().all(CaseResult::passed)
    }

    /// The results of the cases that did not pass.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| !r.passed())
    }
}

/// A summary line, then each failing case's diff: the text Go's Report prints.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        write!(
            f,
            "{} on route {}: {} cases, {} passed, {failed} failed",
            self.file,
            self.route,
            self.results.len(),
            self.results.len() - failed
        )?;
        for r in self.failures() {
            write!(f, "\n{}", r.diff(&self.file))?;
        }
        Ok(())
    }
}

/// Why a run could not judge the handler.
#[derive(Debug)]
pub enum RunError {
    /// The vector file cannot be read.
    File(FileError),
    /// The runtime registers no handler under the route.
    NoRoute {
        /// The vector file.
        file: String,
        /// The route asked for.
        route: String,
        /// The event types the runtime has handlers for.
        known: Vec<String>,
    },
    /// The runtime could not be created or started (a handler's init or warm-up failed).
    Runtime(Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::File(e) => e.fmt(f),
            RunError::NoRoute { file, route, known } => write!(
                f,
                "{file}: route {route:?}: no Rust handler is registered for it (there are {known:?})"
            ),
            RunError::Runtime(e) => write!(f, "the runtime did not start: {e}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::File(e) => Some(e),
            RunError::Runtime(e) => Some(e),
            RunError::NoRoute { .. } => None,
        }
    }
}

impl From<FileError> for RunError {
    fn from(e: FileError) -> RunError {
        RunError::File(e)
    }
}

/// A started runtime of the handlers in a [`Registry`], driven from the test's thread as Go
/// drives it, one case at a time. Its slots are Go's defaults (64 KiB events, 64 KiB replies),
/// so a case fits, or does not, as it would under a Go runtime's default `Config`. Shut down
/// when dropped. Not shared between threads.
pub struct Harness {
    rt: Runtime,
    /// The request slot the next case uses: a case that timed out keeps its own.
    slot: u32,
}

impl Harness {
    /// Starts a runtime of `registry`'s handlers, their init and warm-up included.
    pub fn new(registry: Registry) -> Result<Harness, Error> {
        let cfg = Config {
            workers: 2,
            req_slots: 4,
            rep_slots: 8,
            sq_capacity: 16,
            cq_capacity: 16,
            ..Config::default()
        };
        let mut rt = Runtime::new(cfg, registry)?;
        rt.start()?;
        Ok(Harness { rt, slot: 0 })
    }

    /// Runs every case of `vectors` against the handler registered under `route`, in file
    /// order. Each case's event goes to that handler whatever its own type (a case without
    /// a type carries `route` as its type).
    pub fn check(&mut self, route: &str, vectors: &Vectors) -> Result<Report, RunError> {
        let types = self.rt.event_types();
        let Some(index) = types.iter().position(|t| *t == route) else {
            return Err(RunError::NoRoute {
                file: vectors.file.clone(),
                route: route.to_owned(),
                known: types.iter().map(|t| t.to_string()).collect(),
            });
        };
        let mut report = Report {
            file: vectors.file.clone(),
            route: route.to_owned(),
            results: Vec::with_capacity(vectors.cases.len()),
        };
        for case in &vectors.cases {
            let result = self.run_case(route, index as u32 + 1, case);
            let stop = result.got.is_none() && result.error.as_deref() == Some(TIMED_OUT);
            report.results.push(result);
            if stop {
                break;
            }
        }
        Ok(report)
    }

    fn run_case(&mut self, route: &str, index: u32, case: &Case) -> CaseResult {
        let mut result = CaseResult {
            case: case.clone(),
            got: None,
            error: None,
            mismatches: Vec::new(),
        };
        let bytes = encode(&case.event, route);
        let max = self.rt.shared.cfg.req_slot_size as usize;
        if bytes.len() > max {
            result.error = Some(format!(
                "event too large: {} bytes encoded, the request slot holds {max}",
                bytes.len()
            ));
            return result;
        }
        let slot = self.slot;
        if slot >= self.rt.shared.cfg.req_slots {
            result.error =
                Some("every request slot is held by a handler that never finished".to_owned());
            return result;
        }
        let delivery = Delivery {
            attempt: case.event.attempt.max(1),
            deadline: None,
            waited: false,
            timed: false,
            shadow: false,
            cancellable: false,
        };
        submit_delivery(&self.rt, slot, &bytes, index, delivery);
        match self.outcome(slot) {
            Some(got) => {
                result.mismatches = compare(&case.expect, &got);
                result.got = Some(got);
            }
            None => {
                // The handler still holds the slot; later runs take the next one.
                self.slot += 1;
                result.error = Some(TIMED_OUT.to_owned());
            }
        }
        result
    }

    /// Waits for the final completion of the event in request slot `slot`, releasing every
    /// other record's reply slot (emitted events, log batches) as Go would.
    fn outcome(&self, slot: u32) -> Option<Got> {
        let deadline = Instant::now() + CASE_TIMEOUT;
        loop {
            let Some(done) = try_completion(&self.rt) else {
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                // Yield while an answer is likely soon; then nap, so that a slow handler
                // does not cost the machine a core.
                if now + CASE_TIMEOUT - deadline < Duration::from_millis(10) {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
                continue;
            };
            let final_for_case = done.slot == slot
                && matches!(
                    done.kind,
                    TANDEM_OUTCOME_ACK | TANDEM_OUTCOME_RETRY | TANDEM_OUTCOME_TERM
                );
            let got = final_for_case.then(|| got_of(&done));
            // Emitted events, log batches and the case's own reply or error envelope are
            // copied out: their slots go back, as Go releases them.
            if done.reply_slot != TANDEM_NO_SLOT {
                release(&self.rt, done.reply_slot);
            }
            if got.is_some() {
                return got;
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.rt.shutdown(Duration::from_secs(1));
    }
}

const TIMED_OUT: &str = "no outcome within 10 s; the cases after it were not run";

/// The case's envelope, as Go's intake encodes it: the case's type, else the route's.
fn encode(ev: &CaseEvent, route: &str) -> Vec<u8> {
    fn opt(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    let pairs: Vec<(&str, &str)> = ev
        .extensions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let env = Envelope {
        id: &ev.id,
        source: &ev.source,
        ty: if ev.ty.is_empty() { route } else { &ev.ty },
        specversion: "1.0",
        subject: opt(&ev.subject),
        datacontenttype: opt(&ev.datacontenttype),
        dataschema: opt(&ev.dataschema),
        correlationid: opt(&ev.correlationid),
        causationid: opt(&ev.causationid),
        idempotencykey: opt(&ev.idempotencykey),
        partitionkey: opt(&ev.partitionkey),
        attempt: ev.attempt,
        // The format's extensions are an object: no name twice.
        extensions: Extensions::from_pairs(&pairs).unwrap_or_default(),
        data: &ev.data,
        ..Envelope::default()
    };
    envelope::encode_to_vec(&env)
}

fn got_of(done: &Done) -> Got {
    let verdict = match done.kind {
        TANDEM_OUTCOME_ACK => Verdict::Ack,
        TANDEM_OUTCOME_RETRY => Verdict::Retry,
        _ => Verdict::Term,
    };
    if verdict == Verdict::Ack {
        return Got {
            verdict,
            reply: done.reply.clone(),
            code: String::new(),
            message: String::new(),
        };
    }
    let (code, message) = match envelope::decode_error(&done.reply) {
        Ok(e) => (e.code.to_owned(), e.message.to_owned()),
        Err(e) => (
            "protocol".to_owned(),
            format!("undecodable error envelope: {e}"),
        ),
    };
    Got {
        verdict,
        reply: Vec::new(),
        code,
        message,
    }
}

/// Lists where `got` differs from `want`, in the words of Go's runner.
fn compare(want: &Expect, got: &Got) -> Vec<String> {
    let (verdict, reply, code) = match want {
        Expect::Ack(r) => (Verdict::Ack, r.as_deref(), None),
        Expect::Retry(c) => (Verdict::Retry, None, c.as_deref()),
        Expect::Term(c) => (Verdict::Term, None, c.as_deref()),
    };
    let mut out = Vec::new();
    if got.verdict != verdict {
        let mut line = format!("outcome: got {}, want {verdict}", got.verdict);
        if got.verdict != Verdict::Ack {
            line += &format!(" ({}: {})", got.code, got.message);
        }
        out.push(line);
        return out;
    }
    if let Some(code) = code.filter(|c| !c.is_empty() && *c != got.code) {
        out.push(format!(
            "code: got {:?}, want {code:?} (message: {})",
            got.code, got.message
        ));
    }
    if let Some(want) = reply.filter(|w| *w != got.reply.as_slice()) {
        let i = got
            .reply
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.reply.len().min(want.len()));
        out.push(format!("reply: got  {}", show(&got.reply)));
        out.push(format!("       want {}", show(want)));
        out.push(format!(
            "       first difference at byte {i}: got {}, want {}",
            window(&got.reply, i),
            window(want, i)
        ));
    }
    out
}

/// How many bytes of a byte string a message quotes.
const SHOWN: usize = 48;

/// Quotes a byte string as Go's runner does: as text when it is UTF-8 (Go's %q), else in
/// hex, cut after SHOWN bytes, with its length.
fn show(b: &[u8]) -> String {
    let cut = &b[..b.len().min(SHOWN)];
    let mut s = match std::str::from_utf8(b) {
        Ok(_) => go_quote(&String::from_utf8_lossy(cut)),
        Err(_) => format!("hex {}", hex(cut)),
    };
    if cut.len() < b.len() {
        s += "…";
    }
    format!("{s} ({} bytes)", b.len())
}

/// A Go-style quoted string (strconv.Quote): printable runes as they are, the rest escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            '\t' => out += "\\t",
            '\r' => out += "\\r",
            '\u{7}' => out += "\\a",
            '\u{8}' => out += "\\b",
            '\u{c}' => out += "\\f",
            '\u{b}' => out += "\\v",
            c if (c as u32) < 0x20 || c == '\u{7f}' => out += &format!("\\x{:02x}", c as u32),
            c if c.is_control() => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Up to 8 bytes of `b` from `i`, in spaced hex, or "the end" past it.
fn window(b: &[u8], i: usize) -> String {
    if i >= b.len() {
        return "the end".to_owned();
    }
    let w: Vec<String> = b[i..b.len().min(i + 8)]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    w.join(" ")
}

/// Loads the vector file at `path` and runs it against the handler `registry` registers
/// under `route`.
pub fn check(registry: Registry, route: &str, path: impl AsRef<Path>) -> Result<Report, RunError> {
    let vectors = Vectors::load(path)?;
    let mut harness = Harness::new(registry).map_err(RunError::Runtime)?;
    harness.check(route, &vectors)
}

/// For `cargo test`: runs the vector file at `path` against the handler `registry`
/// registers under `route`, and panics with the report (each failing case, with what
/// differs) unless every case passes. A file that cannot be read, an unknown route or a
/// runtime that does not start panics too, saying so.
#[track_caller]
pub fn assert_conforms(registry: Registry, route: &str, path: impl AsRef<Path>) {
    match check(registry, route, path) {
        Ok(report) if report.ok() => {}
        Ok(report) => panic!("conformance: {report}"),
        Err(e) => panic!("conformance: {e}"),
    }
}
