//! The vector file format (docs/conformance.md), read exactly as Go's package conform reads
//! it: the same fields, the same defaults, the same refusals.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

/// The vector file format version this module reads.
pub const VERSION: u64 = 1;

/// The value of the header line's `format` field.
pub const FORMAT: &str = "tandem.conformance";

/// The largest byte string a value may make, after `repeat`: the largest event a runtime
/// accepts, so that a typo in a repeat count cannot take the machine's memory.
const MAX_BYTES: usize = 64 << 20;

/// A vector file, read: its cases in file order.
#[derive(Debug, Clone)]
pub struct Vectors {
    /// The name the file was loaded under, for messages.
    pub file: String,
    /// The header's description, if any.
    pub description: String,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One case: an event and the outcome its handler must give it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's name, unique in its file.
    pub name: String,
    /// The case's line in its file, from 1.
    pub line: usize,
    /// The event sent.
    pub event: CaseEvent,
    /// The outcome the handler must give.
    pub expect: Expect,
}

/// A case's event. Text attributes the case leaves out are empty; `id` defaults to the
/// case's name and `source` to `/conformance`.
#[derive(Debug, Clone, Default)]
pub struct CaseEvent {
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `type`; empty when the case names none, and the event then goes under the
    /// route under test.
    pub ty: String,
    /// CloudEvents `subject`.
    pub subject: String,
    /// CloudEvents `datacontenttype`.
    pub datacontenttype: String,
    /// CloudEvents `dataschema`.
    pub dataschema: String,
    /// The correlation id.
    pub correlationid: String,
    /// The causation id.
    pub causationid: String,
    /// The idempotency key.
    pub idempotencykey: String,
    /// The partition key.
    pub partitionkey: String,
    /// The delivery number the handler sees (0: the first, 1).
    pub attempt: u32,
    /// Extension attributes, sorted by name.
    pub extensions: Vec<(String, String)>,
    /// The payload.
    pub data: Vec<u8>,
}

/// The outcome a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Acknowledged, with this reply when `Some` (`Some(empty)`: no reply, or an empty one).
    Ack(Option<Vec<u8>>),
    /// A retryable failure, with this error code when `Some`.
    Retry(Option<String>),
    /// A terminal failure, with this error code when `Some`.
    Term(Option<String>),
}

/// What is wrong with a vector file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    /// The file cannot be read.
    Io,
    /// The file does not start with a header of a format and version this module reads.
    Version,
    /// A line is not what the format allows: not JSON, an unknown or misspelt field, a
    /// value of the wrong type, a case without a name, two cases of one name.
    Malformed,
    /// A case expects an outcome other than "ack", "retry" and "term".
    UnknownOutcome,
}

/// A vector file that cannot be read: which file, which line (from 1), which case (when
/// the line named one), what kind of defect, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file's name.
    pub file: String,
    /// The line, from 1 (0: the file as a whole).
    pub line: usize,
    /// The case the line names, if it names one.
    pub case: Option<String>,
    /// The kind of defect.
    pub kind: FileErrorKind,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(c) = &self.case {
            write!(f, " (case {c:?})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

type Fail = (FileErrorKind, String);

fn malformed(msg: impl Into<String>) -> Fail {
    (FileErrorKind::Malformed, msg.into())
}

impl Vectors {
    /// Reads the vector file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Vectors, FileError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| FileError {
            file: name.clone(),
            line: 0,
            case: None,
            kind: FileErrorKind::Io,
            message: e.to_string(),
        })?;
        Vectors::parse(&name, &bytes)
    }

    /// Reads a vector file's bytes; `name` is what errors call it. Fails on the first bad
    /// line.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Vectors, FileError> {
        let mut v = Vectors {
            file: name.to_owned(),
            description: String::new(),
            cases: Vec::new(),
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut saw_header = false;
        let mut last = 0;
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop(); // a final newline ends the last line; it begins no other
        }
        for (i, raw) in lines.into_iter().enumerate() {
            let line = i + 1;
            last = line;
            let fail = |case: Option<String>, (kind, message): Fail| FileError {
                file: name.to_owned(),
                line,
                case,
                kind,
                message,
            };
            let Ok(text) = std::str::from_utf8(raw) else {
                return Err(fail(None, malformed("the line is not UTF-8")));
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if !saw_header {
                saw_header = true;
                let h = read_header(text).map_err(|f| fail(None, f))?;
                v.description = h;
                continue;
            }
            let case = read_case(text, line).map_err(|(c, f)| fail(c, f))?;
            if let Some(first) = seen.get(&case.name) {
                let msg = format!("case {:?} is also on line {first}", case.name);
                return Err(fail(Some(case.name), malformed(msg)));
            }
            seen.insert(case.name.clone(), line);
            v.cases.push(case);
        }
        if !saw_header {
            return Err(FileError {
                file: name.to_owned(),
                line: last,
                case: None,
                kind: FileErrorKind::Version,
                message: format!(
                    "the file is empty: it must start with {{\"format\": {FORMAT:?}, \"version\": {VERSION}}}"
                ),
            });
        }
        Ok(v)
    }
}

fn read_header(text: &str) -> Result<String, Fail> {
    let want = || {
        (
            FileErrorKind::Version,
            format!("the first line must be {{\"format\": {FORMAT:?}, \"version\": {VERSION}}}"),
        )
    };
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) else {
        return Err(want());
    };
    if only(&o, &["format", "version", "description"]).is_err()
        || o.get("format").and_then(Value::as_str) != Some(FORMAT)
    {
        return Err(want());
    }
    match o.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(other) => {
            return Err((
                FileErrorKind::Version,
                format!("version {other} (this reader knows {VERSION})"),
            ));
        }
        None => return Err(want()),
    }
    match o.get("description") {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(want()),
    }
}

fn read_case(text: &str, line: usize) -> Result<Case, (Option<String>, Fail)> {
    let o = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err((None, malformed("a case is a JSON object"))),
        Err(e) => return Err((None, malformed(format!("not JSON: {e}")))),
    };
    let name = match o.get("case") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let at = |f: Fail| (name.clone(), f);
    only(&o, &["case", "event", "expect"]).map_err(at)?;
    let Some(name) = name.clone() else {
        return Err(at(malformed("a case needs a name (\"case\")")));
    };
    let Some(event) = o.get("event") else {
        return Err(at(malformed("a case needs an \"event\"")));
    };
    let event = read_event(event, &name).map_err(at)?;
    let Some(Value::Object(expect)) = o.get("expect") else {
        return Err(at(malformed("a case needs \"expect\" with an \"outcome\"")));
    };
    only(expect, &["outcome", "reply", "code"]).map_err(at)?;
    let outcome = match expect.get("outcome") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(at(malformed("\"outcome\" is a string"))),
        None => return Err(at(malformed("a case needs \"expect\" with an \"outcome\""))),
    };
    let code = match expect.get("code") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(at(malformed("\"code\" is a string"))),
    };
    let reply = expect
        .get("reply")
        .map(read_bytes)
        .transpose()
        .map_err(at)?;
    let expect = match outcome {
        "ack" if code.is_some() => return Err(at(malformed("an \"ack\" has no error code"))),
        "ack" => Expect::Ack(reply),
        "retry" | "term" if reply.is_some() => {
            let msg = format!("a {outcome:?} carries an error code, not a reply");
            return Err(at(malformed(msg)));
        }
        "retry" => Expect::Retry(code),
        "term" => Expect::Term(code),
        other => {
            let msg =
                format!("conform: unknown outcome {other:?}: want \"ack\", \"retry\" or \"term\"");
            return Err(at((FileErrorKind::UnknownOutcome, msg)));
        }
    };
    Ok(Case {
        name,
        line,
        event,
        expect,
    })
}

const TEXT_FIELDS: [&str; 10] = [
    "id",
    "source",
    "type",
    "subject",
    "datacontenttype",
    "dataschema",
    "correlationid",
    "causationid",
    "idempotencykey",
    "partitionkey",
];

fn read_event(v: &Value, name: &str) -> Result<CaseEvent, Fail> {
    let Value::Object(o) = v else {
        return Err(malformed("\"event\" is an object"));
    };
    let mut allowed: Vec<&str> = TEXT_FIELDS.to_vec();
    allowed.extend(["attempt", "extensions", "data"]);
    only(o, &allowed)?;
    let text = |key: &str| -> Result<String, Fail> {
        match o.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(malformed(format!("event field {key:?} is a string"))),
        }
    };
    let mut ev = CaseEvent {
        id: text("id")?,
        source: text("source")?,
        ty: text("type")?,
        subject: text("subject")?,
        datacontenttype: text("datacontenttype")?,
        dataschema: text("dataschema")?,
        correlationid: text("correlationid")?,
        causationid: text("causationid")?,
        idempotencykey: text("idempotencykey")?,
        partitionkey: text("partitionkey")?,
        ..CaseEvent::default()
    };
    if ev.id.is_empty() {
        ev.id = name.to_owned();
    }
    if ev.source.is_empty() {
        ev.source = "/conformance".to_owned();
    }
    if let Some(a) = o.get("attempt") {
        ev.attempt = a
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| malformed("event field \"attempt\" is an integer of 0..2^32"))?;
    }
    match o.get("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(malformed(format!("extension {k:?} is a string")));
                };
                ev.extensions.push((k.clone(), s.clone()));
            }
            ev.extensions.sort();
        }
        Some(_) => return Err(malformed("\"extensions\" is an object of strings")),
    }
    if let Some(d) = o.get("data") {
        ev.data = read_bytes(d)?;
    }
    Ok(ev)
}

/// Reads a byte string: a JSON string (its UTF-8 text), or an object with exactly one of
/// `text`, `hex` and `base64`, and an optional `repeat` count.
fn read_bytes(v: &Value) -> Result<Vec<u8>, Fail> {
    let o = match v {
        Value::String(s) => return Ok(s.as_bytes().to_vec()),
        Value::Object(o) => o,
        _ => {
            return Err(malformed(
                "a byte string is a JSON string or an object of text, hex or base64 (and repeat)",
            ));
        }
    };
    only(o, &["text", "hex", "base64", "repeat"])?;
    let forms: Vec<&str> = ["text", "hex", "base64"]
        .into_iter()
        .filter(|k| o.contains_key(*k))
        .collect();
    let [form] = forms[..] else {
        return Err(malformed(
            "a byte string object has exactly one of text, hex and base64",
        ));
    };
    let Some(s) = o[form].as_str() else {
        return Err(malformed(format!("{form} is a string")));
    };
    let b = match form {
        "text" => s.as_bytes().to_vec(),
        "hex" => from_hex(s).ok_or_else(|| malformed(format!("hex: not hex: {s:?}")))?,
        _ => from_base64(s).ok_or_else(|| malformed("base64: not standard, padded base64"))?,
    };
    let Some(r) = o.get("repeat") else {
        return Ok(b);
    };
    match r.as_u64().and_then(|r| usize::try_from(r).ok()) {
        Some(r) if r >= 1 && b.len().saturating_mul(r) <= MAX_BYTES => Ok(b.repeat(r)),
        _ => Err(malformed(format!(
            "repeat must be 1 or more and the result at most {MAX_BYTES} bytes, got {r} × {} bytes",
            b.len()
        ))),
    }
}

/// Refuses fields outside `allowed`: a misspelt field fails loudly instead of checking
/// nothing.
fn only(o: &Map<String, Value>, allowed: &[&str]) -> Result<(), Fail> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(malformed(format!("unknown field {k:?}"))),
        None => Ok(()),
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Decodes standard, padded base64 (RFC 4648 §4), as Go's base64.StdEncoding does.
fn from_base64(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, q) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Go refuses padding whose dropped bits are not zero.
        if (pad == 1 && bytes[2] != 0) || (pad == 2 && (bytes[1] != 0 || bytes[2] != 0)) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_decode_as_go_does() {
        assert_eq!(from_base64("/wA=").unwrap(), [0xff, 0]);
        assert_eq!(from_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(from_base64("").unwrap(), b"");
        assert!(from_base64("aGVsbG8").is_none());
        assert!(from_base64("aGV=bG8=").is_none());
        assert_eq!(from_hex("FF00a1").unwrap(), [0xff, 0, 0xa1]);
        assert!(from_hex("f").is_none());
        assert!(from_hex("zz").is_none());
    }
}
