//! The version 1 event envelope and error envelope: zero-copy decoding and canonical
//! encoding.
//!
//! The wire format is defined in `ffi/envelope.cddl` and explained in `docs/envelope.md`;
//! the golden vectors in `ffi/testdata/envelopes.json` are shared with the Go package.
//!
//! Decoding reads the map once through [`minicbor::Decoder`], checking each item as it
//! reads it: one well-formed CBOR item with definite lengths, nesting at most
//! [`MAX_DEPTH`] levels (every array, map and tag is a level; the top-level map is level
//! 1), the version, nothing after it. It borrows every string and `data` from the input.
//! An input the read refuses is checked again in two passes, which name its error: the
//! first checks that the whole input is well-formed, the second interprets the map on
//! input then guaranteed well-formed. No pass allocates (except the duplicate-key check of
//! a map with more than 32 keys that are not in ascending order), and none can panic:
//! every read is bounds-checked.
//!
//! When an input has several defects, the reported one is the first well-formedness
//! error in byte order; else `not_map`; else `unsupported_version`; else the first
//! content error in byte order; else `missing_field`.
//!
//! All functions are pure and safe to call from any number of threads.

use core::fmt;

use minicbor::Decoder;
use minicbor::data::Type;
use minicbor::encode::Encoder;
use minicbor::encode::write::Cursor;

/// The envelope major version this module reads and writes (key 0).
pub const VERSION: u64 = 1;

/// The deepest nesting of arrays, maps and tags a decoder accepts; the top-level map is
/// level 1.
pub const MAX_DEPTH: usize = 16;

/// The `specversion` an [`Envelope`] with an empty `specversion` is encoded with.
pub const DEFAULT_SPECVERSION: &str = "1.0";

const KEY_V: u64 = 0;
const KEY_ID: u64 = 1;
const KEY_SOURCE: u64 = 2;
const KEY_TYPE: u64 = 3;
const KEY_SPECVERSION: u64 = 4;
const KEY_TIME: u64 = 5;
const KEY_SUBJECT: u64 = 6;
const KEY_DATACONTENTTYPE: u64 = 7;
const KEY_DATASCHEMA: u64 = 8;
const KEY_CORRELATIONID: u64 = 9;
const KEY_CAUSATIONID: u64 = 10;
const KEY_TRACEPARENT: u64 = 11;
const KEY_TRACESTATE: u64 = 12;
const KEY_ATTEMPT: u64 = 13;
const KEY_DEADLINE: u64 = 14;
const KEY_IDEMPOTENCYKEY: u64 = 15;
const KEY_PARTITIONKEY: u64 = 16;
const KEY_EXTENSIONS: u64 = 17;
const KEY_DATA: u64 = 18;
const EVENT_KEYS: u64 = 19;

const ERR_KEY_V: u64 = 0;
const ERR_KEY_CODE: u64 = 1;
const ERR_KEY_MESSAGE: u64 = 2;
const ERR_KEY_RETRY: u64 = 3;
const ERR_KEY_RUNTIME: u64 = 4;
const ERR_KEY_HANDLER: u64 = 5;
const ERROR_KEYS: u64 = 6;

const RETRY_KEY_ATTEMPTS: u64 = 0;
const RETRY_KEY_BACKOFF: u64 = 1;
const RETRY_KEY_NOT_BEFORE: u64 = 2;
const RETRY_KEYS: u64 = 3;

// ---------------------------------------------------------------------------
// Errors.

/// Why a decoder rejected its input. The names returned by [`DecodeErrorKind::as_str`]
/// are shared with the Go package and the golden vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// The input ends inside an item (or is empty).
    Truncated,
    /// Bytes follow the top-level item.
    TrailingBytes,
    /// The top-level item is not a map.
    NotMap,
    /// An indefinite-length item appears anywhere, even inside an ignored value.
    IndefiniteLength,
    /// A key repeats in the top-level map, the extensions map or the retry map.
    DuplicateKey,
    /// A required field is absent or empty.
    MissingField,
    /// A known key holds the wrong type or an out-of-range value, or a top-level key is
    /// not an unsigned integer.
    WrongType,
    /// Key 0 holds a version other than 1.
    UnsupportedVersion,
    /// A text string the envelope interprets is not valid UTF-8.
    InvalidUtf8,
    /// Arrays, maps and tags nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The input is not well-formed CBOR for another reason (reserved additional
    /// information, a stray break code, a two-byte simple value below 32).
    Malformed,
}

impl DecodeErrorKind {
    /// The kind's name in the shared vocabulary, e.g. `"trailing_bytes"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing_bytes",
            Self::NotMap => "not_map",
            Self::IndefiniteLength => "indefinite_length",
            Self::DuplicateKey => "duplicate_key",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::UnsupportedVersion => "unsupported_version",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::TooDeep => "too_deep",
            Self::Malformed => "malformed",
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected envelope: the reason and the byte offset where it was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    offset: usize,
}

impl DecodeError {
    const fn new(kind: DecodeErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }

    /// Why the input was rejected.
    pub const fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The byte offset at which the problem was detected (for `missing_field`, the end of
    /// the map).
    pub const fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "envelope: {} at offset {}", self.kind, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// The output buffer given to an encoder is shorter than the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// How many bytes the encoding needs.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "envelope: output buffer too small, {} bytes needed",
            self.needed
        )
    }
}

impl std::error::Error for BufferTooSmall {}

use DecodeErrorKind as K;

// ---------------------------------------------------------------------------
// Pass 1: well-formedness, hand-checked because minicbor is lenient about exactly what
// we must reject (indefinite lengths, depth, stray breaks).

const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

/// One item head: major type, argument, whether it opens an indefinite-length item, and
/// the position just past the head.
struct Head {
    major: u8,
    arg: u64,
    indefinite: bool,
    end: usize,
}

fn read_head(buf: &[u8], pos: usize) -> Result<Head, DecodeError> {
    let Some(&initial) = buf.get(pos) else {
        return Err(DecodeError::new(K::Truncated, pos));
    };
    let major = initial >> 5;
    let info = initial & 0x1f;
    let width = match info {
        0..=23 => {
            return Ok(Head {
                major,
                arg: u64::from(info),
                indefinite: false,
                end: pos + 1,
            });
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 if matches!(major, MAJOR_BYTES | MAJOR_TEXT | MAJOR_ARRAY | MAJOR_MAP) => {
            return Ok(Head {
                major,
                arg: 0,
                indefinite: true,
                end: pos + 1,
            });
        }
        // 28-30 are reserved; 31 on an integer or tag means nothing, and on major type
        // 7 it is a break outside an indefinite-length item.
        _ => return Err(DecodeError::new(K::Malformed, pos)),
    };
    let start = pos + 1;
    let Some(bytes) = buf.get(start..start + width) else {
        return Err(DecodeError::new(K::Truncated, buf.len()));
    };
    let arg = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if major == MAJOR_SIMPLE && info == 24 && arg < 32 {
        // RFC 8949 §3.3: simple values below 32 must use the one-byte form.
        return Err(DecodeError::new(K::Malformed, pos));
    }
    Ok(Head {
        major,
        arg,
        indefinite: false,
        end: start + width,
    })
}

/// Counts of array elements or map pairs above this are reported as `truncated` as soon
/// as the head is read (no input we accept is that long); the Go decoder does the same.
const MAX_COUNT: u64 = i32::MAX as u64;

/// Checks the item at `pos`, whose enclosing containers make `depth` levels, and
/// returns the position just past it. The order of the checks (head, depth, then
/// indefinite length) matches the Go decoder's.
fn check_item(buf: &[u8], pos: usize, depth: usize) -> Result<usize, DecodeError> {
    let head = read_head(buf, pos)?;
    let container = matches!(head.major, MAJOR_ARRAY | MAJOR_MAP | MAJOR_TAG);
    if container && depth + 1 > MAX_DEPTH {
        return Err(DecodeError::new(K::TooDeep, pos));
    }
    if head.indefinite {
        return Err(DecodeError::new(K::IndefiniteLength, pos));
    }
    match head.major {
        MAJOR_BYTES | MAJOR_TEXT => {
            let remaining = (buf.len() - head.end) as u64;
            if head.arg > remaining {
                return Err(DecodeError::new(K::Truncated, buf.len()));
            }
            Ok(head.end + head.arg as usize)
        }
        MAJOR_ARRAY | MAJOR_MAP | MAJOR_TAG => {
            if head.major != MAJOR_TAG && head.arg > MAX_COUNT {
                return Err(DecodeError::new(K::Truncated, buf.len()));
            }
            let per_entry = if head.major == MAJOR_MAP { 2 } else { 1 };
            let entries = if head.major == MAJOR_TAG { 1 } else { head.arg };
            let mut at = head.end;
            for _ in 0..entries {
                for _ in 0..per_entry {
                    // Every item takes at least one byte, so a count larger than the
                    // input ends here with `Truncated` after at most `buf.len()` steps.
                    at = check_item(buf, at, depth + 1)?;
                }
            }
            Ok(at)
        }
        _ => Ok(head.end),
    }
}

fn check_well_formed(buf: &[u8]) -> Result<(), DecodeError> {
    let end = check_item(buf, 0, 0)?;
    if end != buf.len() {
        return Err(DecodeError::new(K::TrailingBytes, end));
    }
    Ok(())
}

/// The position just past the item at `pos`, a value in a map at the top: one level down, as
/// `check_well_formed` counts. On input already checked well-formed it cannot fail; on input
/// not checked (the one pass of `decode`) it checks the item as that check would.
fn skip(buf: &[u8], pos: usize) -> Result<usize, DecodeError> {
    check_item(buf, pos, 1)
}

// ---------------------------------------------------------------------------
// Pass 2: interpretation, through minicbor: on well-formed input, or checking each item as
// it reads it (`decode`'s one pass).

fn is_uint(ty: Type) -> bool {
    matches!(ty, Type::U8 | Type::U16 | Type::U32 | Type::U64)
}

fn wrong_type(d: &Decoder<'_>) -> DecodeError {
    DecodeError::new(K::WrongType, d.position())
}

fn read_uint(d: &mut Decoder<'_>) -> Result<u64, DecodeError> {
    if !is_uint(d.datatype().map_err(|_| wrong_type(d))?) {
        return Err(wrong_type(d));
    }
    d.u64().map_err(|_| wrong_type(d))
}

fn read_int(d: &mut Decoder<'_>) -> Result<i64, DecodeError> {
    let pos = d.position();
    match d.datatype() {
        Ok(
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64,
        ) => {
            // A u64 above i64::MAX fails here.
            d.i64().map_err(|_| DecodeError::new(K::WrongType, pos))
        }
        _ => Err(DecodeError::new(K::WrongType, pos)),
    }
}

fn read_str<'a>(d: &mut Decoder<'a>) -> Result<&'a str, DecodeError> {
    let pos = d.position();
    if d.datatype().ok() != Some(Type::String) {
        return Err(DecodeError::new(K::WrongType, pos));
    }
    // The input is well-formed and this is a definite-length text string, so the only
    // way left for minicbor to fail is invalid UTF-8.
    d.str().map_err(|_| DecodeError::new(K::InvalidUtf8, pos))
}

fn read_optional_str<'a>(d: &mut Decoder<'a>) -> Result<Option<&'a str>, DecodeError> {
    read_str(d).map(|s| if s.is_empty() { None } else { Some(s) })
}

fn read_map_len(d: &mut Decoder<'_>) -> Result<u64, DecodeError> {
    let pos = d.position();
    if d.datatype().ok() != Some(Type::Map) {
        return Err(DecodeError::new(K::WrongType, pos));
    }
    match d.map() {
        Ok(Some(n)) => Ok(n),
        _ => Err(DecodeError::new(K::WrongType, pos)),
    }
}

fn skip_value(d: &mut Decoder<'_>) -> Result<(), DecodeError> {
    let end = skip(d.input(), d.position())?;
    d.set_position(end);
    Ok(())
}

/// How many out-of-order unknown keys a map may hold before the duplicate check moves
/// from a stack array to a sorted heap vector.
const STACK_KEYS: usize = 32;

/// Walks a map with unsigned-integer keys: calls `known` for keys below `known_keys`
/// (with the decoder positioned at the value), skips the values of other unsigned keys,
/// rejects other keys as `wrong_type` and any repeated key as `duplicate_key`.
/// Returns the bitmask of known keys present.
fn walk_int_map<'a>(
    d: &mut Decoder<'a>,
    known_keys: u64,
    mut known: impl FnMut(u64, &mut Decoder<'a>) -> Result<(), DecodeError>,
) -> Result<u64, DecodeError> {
    let map_start = d.position();
    let pairs = read_map_len(d)?;
    let mut present = 0u64;
    let mut last: Option<u64> = None;
    let mut ascending = true;
    let mut unknown = [0u64; STACK_KEYS];
    let mut unknown_len = 0usize;
    for _ in 0..pairs {
        let key_pos = d.position();
        let key = read_uint(d)?;
        if last.is_some_and(|l| key <= l) {
            ascending = false;
        }
        last = Some(key);
        if key < known_keys {
            if present & (1 << key) != 0 {
                return Err(DecodeError::new(K::DuplicateKey, key_pos));
            }
            present |= 1 << key;
            known(key, d)?;
            continue;
        }
        if !ascending
            && unknown_len < STACK_KEYS
            && unknown
                .get(..unknown_len)
                .is_some_and(|seen| seen.contains(&key))
        {
            return Err(DecodeError::new(K::DuplicateKey, key_pos));
        }
        if let Some(slot) = unknown.get_mut(unknown_len) {
            *slot = key;
        }
        unknown_len += 1;
        skip_value(d)?;
    }
    if !ascending && unknown_len > STACK_KEYS {
        check_unknown_keys_unique(d.input(), map_start, known_keys)?;
    }
    Ok(present)
}

/// The slow path of the duplicate check: many unknown keys, not in ascending order.
fn check_unknown_keys_unique(
    buf: &[u8],
    map_start: usize,
    known_keys: u64,
) -> Result<(), DecodeError> {
    let mut d = Decoder::new(buf);
    d.set_position(map_start);
    let pairs = read_map_len(&mut d)?;
    let mut keys = Vec::new();
    for _ in 0..pairs {
        let key = read_uint(&mut d)?;
        if key >= known_keys {
            keys.push(key);
        }
        skip_value(&mut d)?;
    }
    keys.sort_unstable();
    if keys.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(DecodeError::new(K::DuplicateKey, map_start));
    }
    Ok(())
}

/// Finds a first key 0 holding an unsigned integer other than [`VERSION`]: a later
/// version may redefine every other field, so it is reported before anything else.
fn check_version(buf: &[u8]) -> Result<(), DecodeError> {
    let mut d = Decoder::new(buf);
    let pairs = read_map_len(&mut d).map_err(|e| DecodeError::new(K::NotMap, e.offset))?;
    for _ in 0..pairs {
        let key_is_zero = match d.datatype() {
            Ok(t) if is_uint(t) => d.u64().ok() == Some(KEY_V),
            _ => {
                skip_value(&mut d)?;
                false
            }
        };
        if key_is_zero {
            let pos = d.position();
            if let Ok(t) = d.datatype()
                && is_uint(t)
                && let Ok(v) = d.u64()
                && v != VERSION
            {
                return Err(DecodeError::new(K::UnsupportedVersion, pos));
            }
            return Ok(());
        }
        skip_value(&mut d)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Extensions.

/// The extensions map of an [`Envelope`]: text keys to text values, keys unique.
///
/// A decoded envelope's extensions are a view over the validated map bytes in the
/// input, read lazily without allocating; an envelope built for encoding points at a
/// caller's slice of pairs ([`Extensions::from_pairs`]). Equality compares contents, not
/// order or encoding.
#[derive(Clone, Copy)]
pub struct Extensions<'a> {
    repr: ExtRepr<'a>,
}

#[derive(Clone, Copy)]
enum ExtRepr<'a> {
    /// The encoded pairs (after the map head) and their count.
    Encoded {
        pairs: &'a [u8],
        len: usize,
    },
    Pairs(&'a [(&'a str, &'a str)]),
}

impl<'a> Extensions<'a> {
    /// No extensions.
    pub const EMPTY: Extensions<'static> = Extensions {
        repr: ExtRepr::Pairs(&[]),
    };

    /// Extensions from key-value pairs, in any order; `None` if a key repeats.
    pub fn from_pairs(pairs: &'a [(&'a str, &'a str)]) -> Option<Self> {
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs.iter().skip(i + 1).any(|(other, _)| other == k) {
                return None;
            }
        }
        Some(Self {
            repr: ExtRepr::Pairs(pairs),
        })
    }

    /// The number of extensions.
    pub fn len(&self) -> usize {
        match self.repr {
            ExtRepr::Encoded { len, .. } => len,
            ExtRepr::Pairs(p) => p.len(),
        }
    }

    /// Whether there are no extensions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The extensions in wire order (decoded) or slice order (built).
    pub fn iter(&self) -> ExtensionsIter<'a> {
        match self.repr {
            ExtRepr::Encoded { pairs, len } => ExtensionsIter {
                repr: IterRepr::Encoded {
                    decoder: Decoder::new(pairs),
                    remaining: len,
                },
            },
            ExtRepr::Pairs(p) => ExtensionsIter {
                repr: IterRepr::Pairs(p.iter()),
            },
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl Default for Extensions<'_> {
    fn default() -> Self {
        Extensions::EMPTY
    }
}

impl PartialEq for Extensions<'_> {
    fn eq(&self, other: &Self) -> bool {
        // Keys are unique on both sides, so equal sizes and inclusion mean equal sets.
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for Extensions<'_> {}

impl fmt::Debug for Extensions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Extensions<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = ExtensionsIter<'a>;
    fn into_iter(self) -> ExtensionsIter<'a> {
        self.iter()
    }
}

/// Iterator over the `(key, value)` pairs of [`Extensions`].
#[derive(Clone)]
pub struct ExtensionsIter<'a> {
    repr: IterRepr<'a>,
}

#[derive(Clone)]
enum IterRepr<'a> {
    Encoded {
        decoder: Decoder<'a>,
        remaining: usize,
    },
    Pairs(core::slice::Iter<'a, (&'a str, &'a str)>),
}

impl<'a> Iterator for ExtensionsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.repr {
            IterRepr::Encoded { decoder, remaining } => {
                if *remaining == 0 {
                    return None;
                }
                *remaining -= 1;
                // The bytes were validated by `decode`; a failure here cannot happen,
                // and ends the iteration rather than panicking.
                match (decoder.str(), decoder.str()) {
                    (Ok(k), Ok(v)) => Some((k, v)),
                    _ => {
                        *remaining = 0;
                        None
                    }
                }
            }
            IterRepr::Pairs(it) => it.next().map(|&(k, v)| (k, v)),
        }
    }
}

/// Canonical order of text keys: bytewise by encoding, i.e. shorter first, then bytewise.
fn ext_key_less(a: &str, b: &str) -> bool {
    (a.len(), a.as_bytes()) < (b.len(), b.as_bytes())
}

fn decode_extensions<'a>(d: &mut Decoder<'a>) -> Result<Extensions<'a>, DecodeError> {
    let map_pos = d.position();
    let n = read_map_len(d)?;
    let start = d.position();
    let mut ascending = true;
    let mut previous: Option<&str> = None;
    let mut stack_keys: [&str; STACK_KEYS] = [""; STACK_KEYS];
    for i in 0..n {
        let key_pos = d.position();
        let key = read_str(d)?;
        read_str(d)?;
        if let Some(p) = previous
            && !ext_key_less(p, key)
        {
            ascending = false;
        }
        previous = Some(key);
        let i = i as usize;
        if !ascending
            && i < STACK_KEYS
            && stack_keys.get(..i).is_some_and(|seen| seen.contains(&key))
        {
            return Err(DecodeError::new(K::DuplicateKey, key_pos));
        }
        if let Some(slot) = stack_keys.get_mut(i) {
            *slot = key;
        }
    }
    let end = d.position();
    let pairs = d.input().get(start..end).unwrap_or_default();
    let len = usize::try_from(n).map_err(|_| DecodeError::new(K::Truncated, map_pos))?;
    let ext = Extensions {
        repr: ExtRepr::Encoded { pairs, len },
    };
    if !ascending && len > STACK_KEYS {
        let mut keys: Vec<&str> = ext.iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(DecodeError::new(K::DuplicateKey, map_pos));
        }
    }
    Ok(ext)
}

// ---------------------------------------------------------------------------
// The event envelope.

/// A decoded (or to-be-encoded) event envelope, borrowing its strings and data.
///
/// `id`, `source`, `ty` and `specversion` are required and non-empty in any envelope
/// [`decode`] returns; an empty `specversion` encodes as [`DEFAULT_SPECVERSION`]. Optional
/// text present but empty on the wire decodes as `None`, and `Some("")` encodes as
/// absent, as do `attempt == 0`, empty `extensions` and empty `data`. Times are Unix
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope<'a> {
    /// CloudEvents `id` (key 1).
    pub id: &'a str,
    /// CloudEvents `source` (key 2).
    pub source: &'a str,
    /// CloudEvents `type` (key 3).
    pub ty: &'a str,
    /// CloudEvents `specversion` (key 4).
    pub specversion: &'a str,
    /// CloudEvents `time` as Unix nanoseconds (key 5).
    pub time: Option<i64>,
    /// CloudEvents `subject` (key 6).
    pub subject: Option<&'a str>,
    /// CloudEvents `datacontenttype` (key 7).
    pub datacontenttype: Option<&'a str>,
    /// CloudEvents `dataschema` (key 8).
    pub dataschema: Option<&'a str>,
    /// The id of the request or conversation this event belongs to (key 9).
    pub correlationid: Option<&'a str>,
    /// The id of the event that caused this one (key 10).
    pub causationid: Option<&'a str>,
    /// W3C `traceparent` (key 11).
    pub traceparent: Option<&'a str>,
    /// W3C `tracestate` (key 12).
    pub tracestate: Option<&'a str>,
    /// The delivery number as the envelope's writer set it, from 1; 0 (absent) means the
    /// first delivery (key 13). A handler reads its delivery's number from
    /// [`Event::attempt`](crate::Event::attempt), which is 1 on the first delivery.
    pub attempt: u32,
    /// When the result stops being useful, as Unix nanoseconds (key 14).
    pub deadline: Option<i64>,
    /// Key for deduplication (key 15).
    pub idempotencykey: Option<&'a str>,
    /// Key that orders events relative to each other (key 16).
    pub partitionkey: Option<&'a str>,
    /// Extension attributes (key 17).
    pub extensions: Extensions<'a>,
    /// The payload (key 18), borrowed from the input when decoded.
    pub data: &'a [u8],
}

/// Decodes an event envelope without copying: strings and `data` borrow `buf`.
///
/// Accepts any well-formed encoding (keys in any order, integers in any width) and
/// ignores unknown unsigned-integer keys. Never panics, never allocates for inputs whose
/// maps hold at most 32 keys out of ascending order.
pub fn decode(buf: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    // One pass reads every field and checks what it reads: each item, the version, nothing
    // after the map. What it accepts, the checking passes accept too, and it costs a third
    // less for every event. An input it refuses goes through those passes, which name its
    // error by the codec's rules: a malformed item anywhere outranks a wrong type before it.
    if let Ok(ev) = read_event(buf) {
        return Ok(ev);
    }
    check_well_formed(buf)?;
    check_version(buf)?;
    read_event(buf)
}

/// The envelope in `buf` read through the index its writer made of it (`tandem_fields`),
/// without walking the CBOR: [`UNINDEXED`] when there is no index (`present` 0) or it does
/// not hold (a span past the end, text that is not UTF-8, a required field absent or empty, a
/// key unknown, extensions that are not one map filling their span), and the caller decodes
/// `buf` instead, which the index never overrules. Reads nothing outside `buf` whatever the
/// index says. A `Result` of `decode`'s type, so that either writes the caller's one place
/// for the envelope, and nothing copies it from one result into another.
#[inline]
pub(crate) fn read_indexed<'a>(
    buf: &'a [u8],
    f: &crate::layout::tandem_fields,
) -> Result<Envelope<'a>, DecodeError> {
    let present = f.present;
    if present & 1 == 0 || present >> EVENT_KEYS != 0 {
        return Err(UNINDEXED);
    }
    let has = |key: u64| present & (1 << key) != 0;
    let bytes = |key: u64| -> Result<&'a [u8], DecodeError> {
        let at = f.at[key as usize];
        let end = (at.off as usize)
            .checked_add(at.len as usize)
            .ok_or(UNINDEXED)?;
        buf.get(at.off as usize..end).ok_or(UNINDEXED)
    };
    let text = |key: u64| -> Result<&'a str, DecodeError> {
        core::str::from_utf8(bytes(key)?).map_err(|_| UNINDEXED)
    };
    let required = |key: u64| -> Result<&'a str, DecodeError> {
        text(key).and_then(|s| {
            if has(key) && !s.is_empty() {
                Ok(s)
            } else {
                Err(UNINDEXED)
            }
        })
    };
    let optional = |key: u64| -> Result<Option<&'a str>, DecodeError> {
        if !has(key) {
            return Ok(None);
        }
        text(key).map(|s| (!s.is_empty()).then_some(s))
    };
    let mut ev = Envelope {
        id: required(KEY_ID)?,
        source: required(KEY_SOURCE)?,
        ty: required(KEY_TYPE)?,
        specversion: required(KEY_SPECVERSION)?,
        time: has(KEY_TIME).then_some(f.time),
        subject: optional(KEY_SUBJECT)?,
        datacontenttype: optional(KEY_DATACONTENTTYPE)?,
        dataschema: optional(KEY_DATASCHEMA)?,
        correlationid: optional(KEY_CORRELATIONID)?,
        causationid: optional(KEY_CAUSATIONID)?,
        traceparent: optional(KEY_TRACEPARENT)?,
        tracestate: optional(KEY_TRACESTATE)?,
        attempt: if has(KEY_ATTEMPT) { f.attempt } else { 0 },
        deadline: has(KEY_DEADLINE).then_some(f.deadline),
        idempotencykey: optional(KEY_IDEMPOTENCYKEY)?,
        partitionkey: optional(KEY_PARTITIONKEY)?,
        ..Envelope::default()
    };
    if has(KEY_EXTENSIONS) {
        let map = bytes(KEY_EXTENSIONS)?;
        let mut d = Decoder::new(map);
        ev.extensions = decode_extensions(&mut d).map_err(|_| UNINDEXED)?;
        if d.position() != map.len() {
            return Err(UNINDEXED);
        }
    }
    if has(KEY_DATA) {
        ev.data = bytes(KEY_DATA)?;
    }
    Ok(ev)
}

/// What `read_indexed` returns when the index does not hold: never an error of the envelope,
/// which its caller decodes instead.
pub(crate) const UNINDEXED: DecodeError = DecodeError::new(DecodeErrorKind::Malformed, 0);

/// The index `read_indexed` reads, made from the envelope in `buf` as Go's encoder makes it
/// (the tests' and the conformance harness's stand-in for Go): `present` 0 if `buf` does not
/// decode.
#[cfg(all(not(loom), any(test, feature = "conform")))]
pub(crate) fn index_of(buf: &[u8]) -> crate::layout::tandem_fields {
    use crate::layout::{tandem_fields, tandem_span};
    let mut f = tandem_fields {
        present: 0,
        attempt: 0,
        time: 0,
        deadline: 0,
        at: [tandem_span::default(); EVENT_KEYS as usize],
    };
    if decode(buf).is_err() {
        return f;
    }
    // The envelope decodes: every read below succeeds.
    let base = buf.as_ptr() as usize;
    let span = |b: &[u8]| tandem_span {
        off: (b.as_ptr() as usize - base) as u32,
        len: b.len() as u32,
    };
    let mut d = Decoder::new(buf);
    let pairs = d.map().ok().flatten().unwrap_or(0);
    let mut present = 0u32;
    for _ in 0..pairs {
        let key = d.u64().unwrap_or(u64::MAX);
        match key {
            KEY_V => drop(d.u64()),
            KEY_TIME => f.time = d.i64().unwrap_or(0),
            KEY_ATTEMPT => f.attempt = d.u32().unwrap_or(0),
            KEY_DEADLINE => f.deadline = d.i64().unwrap_or(0),
            KEY_DATA => f.at[KEY_DATA as usize] = span(d.bytes().unwrap_or_default()),
            KEY_EXTENSIONS => {
                let start = d.position();
                drop(d.skip());
                f.at[KEY_EXTENSIONS as usize] = span(&buf[start..d.position()]);
            }
            k if k < EVENT_KEYS => f.at[k as usize] = span(d.str().unwrap_or_default().as_bytes()),
            _ => drop(d.skip()),
        }
        if key < EVENT_KEYS {
            present |= 1 << key;
        }
    }
    f.present = present;
    f
}

/// The fields of an event envelope, each item checked as it is read (see `decode`).
fn read_event(buf: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    let mut ev = Envelope::default();
    let mut d = Decoder::new(buf);
    let present = walk_int_map(&mut d, EVENT_KEYS, |key, d| {
        match key {
            KEY_V => {
                let pos = d.position();
                if read_uint(d)? != VERSION {
                    return Err(DecodeError::new(K::UnsupportedVersion, pos));
                }
            }
            KEY_ID => ev.id = read_str(d)?,
            KEY_SOURCE => ev.source = read_str(d)?,
            KEY_TYPE => ev.ty = read_str(d)?,
            KEY_SPECVERSION => ev.specversion = read_str(d)?,
            KEY_TIME => ev.time = Some(read_int(d)?),
            KEY_SUBJECT => ev.subject = read_optional_str(d)?,
            KEY_DATACONTENTTYPE => ev.datacontenttype = read_optional_str(d)?,
            KEY_DATASCHEMA => ev.dataschema = read_optional_str(d)?,
            KEY_CORRELATIONID => ev.correlationid = read_optional_str(d)?,
            KEY_CAUSATIONID => ev.causationid = read_optional_str(d)?,
            KEY_TRACEPARENT => ev.traceparent = read_optional_str(d)?,
            KEY_TRACESTATE => ev.tracestate = read_optional_str(d)?,
            KEY_ATTEMPT => {
                let pos = d.position();
                ev.attempt = u32::try_from(read_uint(d)?)
                    .map_err(|_| DecodeError::new(K::WrongType, pos))?;
            }
            KEY_DEADLINE => ev.deadline = Some(read_int(d)?),
            KEY_IDEMPOTENCYKEY => ev.idempotencykey = read_optional_str(d)?,
            KEY_PARTITIONKEY => ev.partitionkey = read_optional_str(d)?,
            KEY_EXTENSIONS => ev.extensions = decode_extensions(d)?,
            KEY_DATA => {
                let pos = d.position();
                if d.datatype().ok() != Some(Type::Bytes) {
                    return Err(DecodeError::new(K::WrongType, pos));
                }
                ev.data = d.bytes().map_err(|_| DecodeError::new(K::WrongType, pos))?;
            }
            _ => skip_value(d)?,
        }
        Ok(())
    })
    .map_err(|e| not_map_at_top(e, buf))?;
    if d.position() != buf.len() {
        return Err(DecodeError::new(K::TrailingBytes, d.position()));
    }
    let missing = present & 1 == 0
        || ev.id.is_empty()
        || ev.source.is_empty()
        || ev.ty.is_empty()
        || ev.specversion.is_empty();
    if missing {
        return Err(DecodeError::new(K::MissingField, buf.len()));
    }
    Ok(ev)
}

/// A `wrong_type` at offset 0 can only mean the top-level item is not a map.
fn not_map_at_top(e: DecodeError, buf: &[u8]) -> DecodeError {
    if e.offset == 0 && e.kind == K::WrongType && !buf.is_empty() {
        DecodeError::new(K::NotMap, 0)
    } else {
        e
    }
}

/// Writes canonical CBOR through minicbor's encoder, which always picks the shortest
/// head. The buffer is sized beforehand, so a write error cannot happen; it is still
/// reported (as `BufferTooSmall`) rather than trusted away.
struct Writer<'b> {
    enc: Encoder<Cursor<&'b mut [u8]>>,
}

type WriteResult = Result<(), ()>;

impl<'b> Writer<'b> {
    fn new(out: &'b mut [u8]) -> Self {
        Self {
            enc: Encoder::new(Cursor::new(out)),
        }
    }
    fn map(&mut self, n: u64) -> WriteResult {
        self.enc.map(n).map(drop).map_err(drop)
    }
    fn uint(&mut self, n: u64) -> WriteResult {
        self.enc.u64(n).map(drop).map_err(drop)
    }
    fn int(&mut self, n: i64) -> WriteResult {
        self.enc.i64(n).map(drop).map_err(drop)
    }
    fn str(&mut self, s: &str) -> WriteResult {
        self.enc.str(s).map(drop).map_err(drop)
    }
    fn bytes(&mut self, b: &[u8]) -> WriteResult {
        self.enc.bytes(b).map(drop).map_err(drop)
    }
    fn text_field(&mut self, key: u64, s: Option<&str>) -> WriteResult {
        match s {
            Some(s) if !s.is_empty() => {
                self.uint(key)?;
                self.str(s)
            }
            _ => Ok(()),
        }
    }
    fn position(&self) -> usize {
        self.enc.writer().position()
    }
}

fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn int_len(n: i64) -> usize {
    if n >= 0 {
        head_len(n as u64)
    } else {
        head_len(!n as u64)
    }
}

fn text_len(s: &str) -> usize {
    head_len(s.len() as u64) + s.len()
}

fn opt_text_len(s: Option<&str>) -> usize {
    match s {
        Some(s) if !s.is_empty() => 1 + text_len(s),
        _ => 0,
    }
}

fn specversion<'a>(ev: &Envelope<'a>) -> &'a str {
    if ev.specversion.is_empty() {
        DEFAULT_SPECVERSION
    } else {
        ev.specversion
    }
}

fn opt_texts<'a>(ev: &Envelope<'a>) -> [(u64, Option<&'a str>); 7] {
    [
        (KEY_SUBJECT, ev.subject),
        (KEY_DATACONTENTTYPE, ev.datacontenttype),
        (KEY_DATASCHEMA, ev.dataschema),
        (KEY_CORRELATIONID, ev.correlationid),
        (KEY_CAUSATIONID, ev.causationid),
        (KEY_TRACEPARENT, ev.traceparent),
        (KEY_TRACESTATE, ev.tracestate),
    ]
}

fn field_count(ev: &Envelope<'_>) -> u64 {
    let texts = opt_texts(ev)
        .iter()
        .chain(
            [
                (KEY_IDEMPOTENCYKEY, ev.idempotencykey),
                (KEY_PARTITIONKEY, ev.partitionkey),
            ]
            .iter(),
        )
        .filter(|(_, s)| s.is_some_and(|s| !s.is_empty()))
        .count() as u64;
    5 + texts
        + u64::from(ev.time.is_some())
        + u64::from(ev.attempt != 0)
        + u64::from(ev.deadline.is_some())
        + u64::from(!ev.extensions.is_empty())
        + u64::from(!ev.data.is_empty())
}

/// The exact number of bytes [`encode_into`] writes for `ev`.
pub fn encoded_len(ev: &Envelope<'_>) -> usize {
    let mut n = head_len(field_count(ev)) + 2; // map head, key 0, version 1
    n += 4 + text_len(ev.id) + text_len(ev.source) + text_len(ev.ty) + text_len(specversion(ev));
    n += ev.time.map_or(0, |t| 1 + int_len(t));
    n += opt_texts(ev)
        .iter()
        .map(|(_, s)| opt_text_len(*s))
        .sum::<usize>();
    if ev.attempt != 0 {
        n += 1 + head_len(u64::from(ev.attempt));
    }
    n += ev.deadline.map_or(0, |t| 1 + int_len(t));
    n += opt_text_len(ev.idempotencykey) + opt_text_len(ev.partitionkey);
    if !ev.extensions.is_empty() {
        n += 1 + head_len(ev.extensions.len() as u64);
        n += ev
            .extensions
            .iter()
            .map(|(k, v)| text_len(k) + text_len(v))
            .sum::<usize>();
    }
    if !ev.data.is_empty() {
        n += 1 + head_len(ev.data.len() as u64) + ev.data.len();
    }
    n
}

/// Writes the extensions in canonical key order by repeated selection of the next
/// smallest key: quadratic in the number of extensions, which is small, and no
/// allocation.
fn write_extensions(w: &mut Writer<'_>, ext: &Extensions<'_>) -> WriteResult {
    w.uint(KEY_EXTENSIONS)?;
    w.map(ext.len() as u64)?;
    let mut last: Option<&str> = None;
    for _ in 0..ext.len() {
        let next = ext
            .iter()
            .filter(|(k, _)| last.is_none_or(|l| ext_key_less(l, k)))
            .fold(None::<(&str, &str)>, |best, kv| match best {
                Some(b) if !ext_key_less(kv.0, b.0) => Some(b),
                _ => Some(kv),
            });
        let Some((k, v)) = next else { return Err(()) };
        w.str(k)?;
        w.str(v)?;
        last = Some(k);
    }
    Ok(())
}

fn write_event(w: &mut Writer<'_>, ev: &Envelope<'_>) -> WriteResult {
    w.map(field_count(ev))?;
    w.uint(KEY_V)?;
    w.uint(VERSION)?;
    for (key, s) in [
        (KEY_ID, ev.id),
        (KEY_SOURCE, ev.source),
        (KEY_TYPE, ev.ty),
        (KEY_SPECVERSION, specversion(ev)),
    ] {
        w.uint(key)?;
        w.str(s)?;
    }
    if let Some(t) = ev.time {
        w.uint(KEY_TIME)?;
        w.int(t)?;
    }
    for (key, s) in opt_texts(ev) {
        w.text_field(key, s)?;
    }
    if ev.attempt != 0 {
        w.uint(KEY_ATTEMPT)?;
        w.uint(u64::from(ev.attempt))?;
    }
    if let Some(t) = ev.deadline {
        w.uint(KEY_DEADLINE)?;
        w.int(t)?;
    }
    w.text_field(KEY_IDEMPOTENCYKEY, ev.idempotencykey)?;
    w.text_field(KEY_PARTITIONKEY, ev.partitionkey)?;
    if !ev.extensions.is_empty() {
        write_extensions(w, &ev.extensions)?;
    }
    if !ev.data.is_empty() {
        w.uint(KEY_DATA)?;
        w.bytes(ev.data)?;
    }
    Ok(())
}

/// Encodes `ev` canonically into the front of `out` and returns the number of bytes
/// written, which is [`encoded_len`]`(ev)`. Extensions are written sorted whatever their
/// order in `ev`. The caller guarantees `id`, `source` and `ty` are non-empty (as in any
/// decoded envelope); this function does not check.
pub fn encode_into(ev: &Envelope<'_>, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let needed = encoded_len(ev);
    let too_small = BufferTooSmall { needed };
    let Some(out) = out.get_mut(..needed) else {
        return Err(too_small);
    };
    let mut w = Writer::new(out);
    write_event(&mut w, ev).map_err(|()| too_small)?;
    if w.position() != needed {
        return Err(too_small);
    }
    Ok(needed)
}

/// Encodes `ev` canonically into a new vector; see [`encode_into`].
pub fn encode_to_vec(ev: &Envelope<'_>) -> Vec<u8> {
    let mut out = vec![0; encoded_len(ev)];
    let n = encode_into(ev, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

// ---------------------------------------------------------------------------
// The error envelope.

/// Retry advice carried by an [`ErrorEnvelope`]. `Some(0)` attempts or backoff encode as
/// absent and decode as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    /// How many more attempts the failing side suggests (key 0).
    pub attempts: Option<u32>,
    /// How long to wait before the next attempt, in nanoseconds (key 1). At most
    /// `i64::MAX` on the wire (the Go side holds it in a `time.Duration`); larger values
    /// are rejected when decoding and clamped when encoding.
    pub backoff_ns: Option<u64>,
    /// The earliest time of the next attempt, as Unix nanoseconds (key 2).
    pub not_before: Option<i64>,
}

/// A handler failure as it crosses the boundary. `code` is required; the other text
/// fields are absent when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorEnvelope<'a> {
    /// What went wrong, from the shared vocabulary: "handler", "panic", "timeout",
    /// "cancelled", "decode", "no_route", "overloaded", "reply_too_large", ... (key 1).
    pub code: &'a str,
    /// A human-readable description (key 2).
    pub message: &'a str,
    /// Retry advice (key 3); `Some` with every field `None` is an empty map on the wire.
    pub retry: Option<RetryPolicy>,
    /// The runtime that produced the error, "go" or "rust" (key 4).
    pub runtime: &'a str,
    /// The handler that produced the error (key 5).
    pub handler: &'a str,
}

fn decode_retry(d: &mut Decoder<'_>) -> Result<RetryPolicy, DecodeError> {
    let mut r = RetryPolicy::default();
    walk_int_map(d, RETRY_KEYS, |key, d| {
        let pos = d.position();
        match key {
            RETRY_KEY_ATTEMPTS => {
                let n = u32::try_from(read_uint(d)?)
                    .map_err(|_| DecodeError::new(K::WrongType, pos))?;
                r.attempts = (n != 0).then_some(n);
            }
            RETRY_KEY_BACKOFF => {
                let n = read_uint(d)?;
                if n > i64::MAX as u64 {
                    return Err(DecodeError::new(K::WrongType, pos));
                }
                r.backoff_ns = (n != 0).then_some(n);
            }
            RETRY_KEY_NOT_BEFORE => r.not_before = Some(read_int(d)?),
            _ => skip_value(d)?,
        }
        Ok(())
    })?;
    Ok(r)
}

/// Decodes an error envelope without copying, with the same rules as [`decode`].
pub fn decode_error(buf: &[u8]) -> Result<ErrorEnvelope<'_>, DecodeError> {
    check_well_formed(buf)?;
    check_version(buf)?;
    let mut e = ErrorEnvelope::default();
    let mut d = Decoder::new(buf);
    let present = walk_int_map(&mut d, ERROR_KEYS, |key, d| {
        match key {
            ERR_KEY_V => {
                read_uint(d)?;
            }
            ERR_KEY_CODE => e.code = read_str(d)?,
            ERR_KEY_MESSAGE => e.message = read_str(d)?,
            ERR_KEY_RETRY => e.retry = Some(decode_retry(d)?),
            ERR_KEY_RUNTIME => e.runtime = read_str(d)?,
            ERR_KEY_HANDLER => e.handler = read_str(d)?,
            _ => skip_value(d)?,
        }
        Ok(())
    })
    .map_err(|err| not_map_at_top(err, buf))?;
    if present & 1 == 0 || e.code.is_empty() {
        return Err(DecodeError::new(K::MissingField, buf.len()));
    }
    Ok(e)
}

fn nonzero<T: PartialEq + Default>(x: Option<T>) -> Option<T> {
    x.filter(|v| *v != T::default())
}

fn backoff(r: &RetryPolicy) -> Option<u64> {
    nonzero(r.backoff_ns).map(|b| b.min(i64::MAX as u64))
}

fn error_field_count(e: &ErrorEnvelope<'_>) -> u64 {
    2 + [e.message, e.runtime, e.handler]
        .iter()
        .filter(|s| !s.is_empty())
        .count() as u64
        + u64::from(e.retry.is_some())
}

fn retry_field_count(r: &RetryPolicy) -> u64 {
    u64::from(nonzero(r.attempts).is_some())
        + u64::from(backoff(r).is_some())
        + u64::from(r.not_before.is_some())
}

/// The exact number of bytes [`encode_error_into`] writes for `e`.
pub fn error_encoded_len(e: &ErrorEnvelope<'_>) -> usize {
    let text = |s: &str| if s.is_empty() { 0 } else { 1 + text_len(s) };
    let mut n = head_len(error_field_count(e)) + 2 + 1 + text_len(e.code);
    n += text(e.message) + text(e.runtime) + text(e.handler);
    if let Some(r) = &e.retry {
        n += 1 + head_len(retry_field_count(r));
        n += nonzero(r.attempts).map_or(0, |a| 1 + head_len(u64::from(a)));
        n += backoff(r).map_or(0, |b| 1 + head_len(b));
        n += r.not_before.map_or(0, |t| 1 + int_len(t));
    }
    n
}

fn some(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn write_error(w: &mut Writer<'_>, e: &ErrorEnvelope<'_>) -> WriteResult {
    w.map(error_field_count(e))?;
    w.uint(ERR_KEY_V)?;
    w.uint(VERSION)?;
    w.uint(ERR_KEY_CODE)?;
    w.str(e.code)?;
    w.text_field(ERR_KEY_MESSAGE, some(e.message))?;
    if let Some(r) = &e.retry {
        w.uint(ERR_KEY_RETRY)?;
        w.map(retry_field_count(r))?;
        if let Some(a) = nonzero(r.attempts) {
            w.uint(RETRY_KEY_ATTEMPTS)?;
            w.uint(u64::from(a))?;
        }
        if let Some(b) = backoff(r) {
            w.uint(RETRY_KEY_BACKOFF)?;
            w.uint(b)?;
        }
        if let Some(t) = r.not_before {
            w.uint(RETRY_KEY_NOT_BEFORE)?;
            w.int(t)?;
        }
    }
    w.text_field(ERR_KEY_RUNTIME, some(e.runtime))?;
    w.text_field(ERR_KEY_HANDLER, some(e.handler))
}

/// Encodes `e` canonically into the front of `out` and returns the number of bytes
/// written, which is [`error_encoded_len`]`(e)`. The caller guarantees `code` is
/// non-empty.
pub fn encode_error_into(e: &ErrorEnvelope<'_>, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let needed = error_encoded_len(e);
    let too_small = BufferTooSmall { needed };
    let Some(out) = out.get_mut(..needed) else {
        return Err(too_small);
    };
    let mut w = Writer::new(out);
    write_error(&mut w, e).map_err(|()| too_small)?;
    if w.position() != needed {
        return Err(too_small);
    }
    Ok(needed)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// What `decode` returned before its one pass: every check, then the fields.
    fn checked(buf: &[u8]) -> Result<Envelope<'_>, DecodeError> {
        check_well_formed(buf)?;
        check_version(buf)?;
        read_event(buf)
    }

    fn golden_events() -> Vec<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ffi/testdata/envelopes.json");
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("golden file"))
                .expect("JSON");
        file["vectors"]
            .as_array()
            .expect("vectors")
            .iter()
            .filter(|v| v["kind"] == "event")
            .map(|v| {
                let h = v["hex"].as_str().expect("hex");
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                    .collect()
            })
            .collect()
    }

    // The one pass may refuse more than the checks (the checks then name the error) but
    // never accepts what they refuse, and reads what it accepts as they do. Over every
    // golden event, valid or not, each of its truncations, and each byte of it replaced by
    // values that change a head's type or width, or a text's bytes.
    #[test]
    fn decode_in_one_pass_accepts_only_what_the_checks_accept() {
        let mut accepted = 0;
        let mut compared = 0;
        let mut agree = |buf: &[u8]| {
            compared += 1;
            assert_eq!(decode(buf), checked(buf), "input {buf:02x?}");
            if let Ok(ev) = read_event(buf) {
                accepted += 1;
                assert_eq!(Ok(ev), checked(buf), "one pass accepted {buf:02x?}");
            }
        };
        for v in golden_events() {
            agree(&v);
            for n in 0..v.len() {
                agree(&v[..n]);
                for b in [
                    0x00, 0x01, 0x17, 0x18, 0x1f, 0x3f, 0x5f, 0x60, 0x7f, 0x80, 0x9f, 0xa1, 0xbf,
                    0xc0, 0xdb, 0xf6, 0xff,
                ] {
                    let mut m = v.clone();
                    m[n] = b;
                    agree(&m);
                }
                let mut extra = v.clone();
                extra.insert(n, 0x00);
                agree(&extra);
            }
        }
        assert!(
            accepted > 1_000 && compared > 2 * accepted,
            "{accepted} of {compared} accepted: the inputs must mix both"
        );
    }

    /// Every event the golden vectors hold and the benchmarks' shapes, as Go's encoder
    /// writes them (`encode_to_vec` gives the same canonical bytes).
    fn indexable_events() -> Vec<Vec<u8>> {
        let pairs = [("region", "eu-west"), ("tenant", "acme")];
        let data = vec![7u8; 70_000];
        let full = Envelope {
            id: "order-1",
            source: "/orders",
            ty: "order.created",
            specversion: "1.0",
            time: Some(-5),
            subject: Some("o/1"),
            datacontenttype: Some("application/cbor"),
            dataschema: Some("s"),
            correlationid: Some("c"),
            causationid: Some("d"),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            tracestate: Some("k=v"),
            attempt: 3,
            deadline: Some(1_790_000_000_000_000_000),
            idempotencykey: Some("i"),
            partitionkey: Some("p\u{e9}"),
            extensions: Extensions::from_pairs(&pairs).expect("pairs"),
            data: &data,
        };
        let mut events: Vec<Vec<u8>> = golden_events()
            .into_iter()
            .filter(|v| decode(v).is_ok())
            .collect();
        events.push(encode_to_vec(&full));
        events.push(encode_to_vec(&Envelope {
            extensions: Extensions::EMPTY,
            data: b"",
            ..full
        }));
        events
    }

    #[test]
    fn an_index_reads_as_the_envelope_decodes() {
        let events = indexable_events();
        assert!(events.len() > 5, "{} events", events.len());
        for v in events {
            let f = index_of(&v);
            assert_ne!(f.present, 0, "{v:02x?}");
            assert_eq!(
                read_indexed(&v, &f),
                Ok(decode(&v).expect("valid")),
                "{v:02x?}"
            );
        }
    }

    /// A reader never takes an index that does not hold for its envelope: it decodes the
    /// envelope instead (`RequestSlot::decode`).
    #[test]
    fn an_index_that_does_not_hold_is_refused() {
        use crate::layout::tandem_span;
        let v = encode_to_vec(&Envelope {
            id: "1",
            source: "/s",
            ty: "t",
            specversion: "1.0",
            subject: Some("s\u{e9}"),
            extensions: Extensions::from_pairs(&[("a", "b")]).expect("pairs"),
            data: b"payload",
            ..Envelope::default()
        });
        let good = index_of(&v);
        assert!(read_indexed(&v, &good).is_ok());
        let subject = good.at[KEY_SUBJECT as usize];
        let len = v.len() as u32;
        type Spoil = Box<dyn Fn(&mut crate::layout::tandem_fields)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("no index", Box::new(|f| f.present = 0)),
            ("no version bit", Box::new(|f| f.present &= !1)),
            ("a key past 18", Box::new(|f| f.present |= 1 << 19)),
            ("no id", Box::new(|f| f.present &= !(1 << KEY_ID))),
            (
                "an empty type",
                Box::new(|f| f.at[KEY_TYPE as usize].len = 0),
            ),
            (
                "a span past the end",
                Box::new(move |f| f.at[KEY_DATA as usize].len = len),
            ),
            (
                "a span at u32::MAX",
                Box::new(|f| {
                    f.at[KEY_SOURCE as usize] = tandem_span {
                        off: u32::MAX,
                        len: u32::MAX,
                    }
                }),
            ),
            // The subject's last byte alone: half of "é".
            (
                "text not UTF-8",
                Box::new(move |f| {
                    f.at[KEY_SUBJECT as usize] = tandem_span {
                        off: subject.off + subject.len - 1,
                        len: 1,
                    }
                }),
            ),
            (
                "extensions not a map",
                Box::new(|f| f.at[KEY_EXTENSIONS as usize].off += 1),
            ),
            (
                "extensions short of their span",
                Box::new(|f| f.at[KEY_EXTENSIONS as usize].len += 1),
            ),
        ];
        for (name, spoil) in cases {
            let mut f = index_of(&v);
            spoil(&mut f);
            assert_eq!(read_indexed(&v, &f), Err(UNINDEXED), "{name}");
        }
    }
}
