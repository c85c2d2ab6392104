//! The shared golden vectors (ffi/testdata/envelopes.json), read by the Go tests too.

use serde_json::Value;
use tandem::envelope::{
    self, Envelope, ErrorEnvelope, Extensions, RetryPolicy, decode, decode_error,
    encode_error_into, encode_into, encoded_len, error_encoded_len,
};

fn vectors() -> Vec<Value> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ffi/testdata/envelopes.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).expect("golden file is JSON");
    assert_eq!(file["version"], 1);
    let vectors = file["vectors"].as_array().expect("vectors array").clone();
    assert!(vectors.len() >= 30, "only {} vectors", vectors.len());
    vectors
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn text<'a>(x: &'a Value, name: &str) -> Option<&'a str> {
    x.get(name).map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("{name} is not a string"))
    })
}

fn check_event(name: &str, got: &Envelope<'_>, x: &Value) {
    assert_eq!(x["v"], 1, "{name}: expect.v");
    assert_eq!(Some(got.id), text(x, "id"), "{name}: id");
    assert_eq!(Some(got.source), text(x, "source"), "{name}: source");
    assert_eq!(Some(got.ty), text(x, "type"), "{name}: type");
    assert_eq!(
        Some(got.specversion),
        text(x, "specversion"),
        "{name}: specversion"
    );
    assert_eq!(
        got.time,
        x.get("time").map(|v| v.as_i64().expect("time")),
        "{name}: time"
    );
    assert_eq!(
        got.deadline,
        x.get("deadline").map(|v| v.as_i64().expect("deadline")),
        "{name}: deadline"
    );
    assert_eq!(
        u64::from(got.attempt),
        x.get("attempt").map_or(0, |v| v.as_u64().expect("attempt")),
        "{name}: attempt"
    );
    for (field, value) in [
        ("subject", got.subject),
        ("datacontenttype", got.datacontenttype),
        ("dataschema", got.dataschema),
        ("correlationid", got.correlationid),
        ("causationid", got.causationid),
        ("traceparent", got.traceparent),
        ("tracestate", got.tracestate),
        ("idempotencykey", got.idempotencykey),
        ("partitionkey", got.partitionkey),
    ] {
        assert_eq!(value, text(x, field), "{name}: {field}");
    }
    let want_ext = x
        .get("extensions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        got.extensions.len(),
        want_ext.len(),
        "{name}: extensions length"
    );
    for (k, v) in &want_ext {
        assert_eq!(got.extensions.get(k), v.as_str(), "{name}: extension {k}");
    }
    assert_eq!(
        got.extensions.iter().count(),
        want_ext.len(),
        "{name}: extensions iterate"
    );
    assert_eq!(
        got.data,
        unhex(text(x, "data_hex").unwrap_or("")),
        "{name}: data"
    );
}

fn check_error(name: &str, got: &ErrorEnvelope<'_>, x: &Value) {
    assert_eq!(Some(got.code), text(x, "code"), "{name}: code");
    assert_eq!(
        got.message,
        text(x, "message").unwrap_or(""),
        "{name}: message"
    );
    assert_eq!(
        got.runtime,
        text(x, "runtime").unwrap_or(""),
        "{name}: runtime"
    );
    assert_eq!(
        got.handler,
        text(x, "handler").unwrap_or(""),
        "{name}: handler"
    );
    let want = x.get("retry").map(|r| RetryPolicy {
        attempts: r
            .get("attempts")
            .map(|v| u32::try_from(v.as_u64().expect("attempts")).expect("u32")),
        backoff_ns: r.get("backoff_ns").map(|v| v.as_u64().expect("backoff_ns")),
        not_before: r.get("not_before").map(|v| v.as_i64().expect("not_before")),
    });
    assert_eq!(got.retry, want, "{name}: retry");
}

#[test]
fn golden_vectors() {
    let mut checked = 0;
    for v in vectors() {
        let name = v["name"].as_str().expect("name");
        let input = unhex(v["hex"].as_str().expect("hex"));
        let is_event = match v["kind"].as_str() {
            Some("event") => true,
            Some("error") => false,
            other => panic!("{name}: kind {other:?}"),
        };
        if v["valid"] == false {
            let want = v["error"].as_str().expect("error");
            let got = if is_event {
                decode(&input).err()
            } else {
                decode_error(&input).err()
            };
            let got = got.unwrap_or_else(|| panic!("{name}: decoded, want {want}"));
            assert_eq!(got.kind().as_str(), want, "{name}: {got}");
            checked += 1;
            continue;
        }
        let canonical = if v["canonical"] == true {
            input.clone()
        } else {
            unhex(
                v["canonical_hex"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: canonical_hex")),
            )
        };
        let mut out = vec![0u8; canonical.len() + 8];
        if is_event {
            let ev = decode(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_event(name, &ev, &v["expect"]);
            assert_eq!(encoded_len(&ev), canonical.len(), "{name}: encoded_len");
            let n = encode_into(&ev, &mut out).expect("room");
            assert_eq!(&out[..n], &canonical[..], "{name}: re-encoding");
            assert_eq!(
                envelope::encode_to_vec(&ev),
                canonical,
                "{name}: encode_to_vec"
            );
            assert_eq!(
                encode_into(&ev, &mut out[..canonical.len() - 1]),
                Err(envelope::BufferTooSmall {
                    needed: canonical.len()
                }),
                "{name}: short buffer"
            );
        } else {
            let e = decode_error(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_error(name, &e, &v["expect"]);
            assert_eq!(
                error_encoded_len(&e),
                canonical.len(),
                "{name}: error_encoded_len"
            );
            let n = encode_error_into(&e, &mut out).expect("room");
            assert_eq!(&out[..n], &canonical[..], "{name}: re-encoding");
        }
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn data_and_strings_borrow_the_input() {
    let ev = Envelope {
        id: "e",
        source: "s",
        ty: "t",
        data: &[1, 2, 3, 4],
        ..Envelope::default()
    };
    let buf = envelope::encode_to_vec(&ev);
    let back = decode(&buf).expect("decodes");
    let range = buf.as_ptr_range();
    assert!(
        range.contains(&back.data.as_ptr()),
        "data is a borrow of the input"
    );
    assert!(
        range.contains(&back.id.as_ptr()),
        "id is a borrow of the input"
    );
    assert_eq!(back.specversion, "1.0", "empty specversion encodes as 1.0");
}

#[test]
fn extensions_from_pairs_rejects_duplicates_and_encodes_sorted() {
    assert!(Extensions::from_pairs(&[("a", "1"), ("a", "2")]).is_none());
    let pairs = [("zz", "1"), ("b", "2"), ("a", "3")];
    let ext = Extensions::from_pairs(&pairs).expect("unique");
    let ev = Envelope {
        id: "e",
        source: "s",
        ty: "t",
        extensions: ext,
        ..Envelope::default()
    };
    let buf = envelope::encode_to_vec(&ev);
    let back = decode(&buf).expect("decodes");
    let keys: Vec<_> = back.extensions.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "b", "zz"]);
    assert_eq!(back.extensions, ext);
    assert_eq!(Extensions::default(), Extensions::EMPTY);
}
