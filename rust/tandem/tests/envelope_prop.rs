//! Properties of the envelope codec: no input makes the decoder panic, and every
//! envelope survives encode -> decode unchanged.

use proptest::prelude::*;
use tandem::envelope::{
    Envelope, ErrorEnvelope, Extensions, RetryPolicy, decode, decode_error, encode_error_into,
    encode_into, encoded_len, error_encoded_len,
};

fn golden_inputs() -> Vec<Vec<u8>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ffi/testdata/envelopes.json");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("JSON");
    file["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            let h = v["hex"].as_str().expect("hex");
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect()
}

/// Owned storage a borrowed `Envelope` is built over.
#[derive(Debug, Clone)]
struct Owned {
    required: [String; 4],
    optional: [Option<String>; 9],
    time: Option<i64>,
    deadline: Option<i64>,
    attempt: u32,
    extensions: Vec<(String, String)>,
    data: Vec<u8>,
}

impl Owned {
    fn envelope<'a>(&'a self, pairs: &'a [(&'a str, &'a str)]) -> Envelope<'a> {
        let o = |i: usize| self.optional[i].as_deref();
        Envelope {
            id: &self.required[0],
            source: &self.required[1],
            ty: &self.required[2],
            specversion: &self.required[3],
            time: self.time,
            subject: o(0),
            datacontenttype: o(1),
            dataschema: o(2),
            correlationid: o(3),
            causationid: o(4),
            traceparent: o(5),
            tracestate: o(6),
            attempt: self.attempt,
            deadline: self.deadline,
            idempotencykey: o(7),
            partitionkey: o(8),
            extensions: Extensions::from_pairs(pairs).expect("unique keys"),
            data: &self.data,
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{1,8}", "[a-z]{20,40}", "\\PC{1,300}"]
}

fn owned() -> impl Strategy<Value = Owned> {
    (
        [text(), text(), text(), text()],
        proptest::array::uniform9(proptest::option::of(text())),
        (
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            any::<u32>(),
        ),
        proptest::collection::btree_map(".{0,30}", ".{0,30}", 0..20),
        proptest::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(
            |(required, optional, (time, deadline, attempt), ext, data)| Owned {
                required,
                optional,
                time,
                deadline,
                attempt,
                extensions: ext.into_iter().rev().collect(),
                data,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = decode_error(&bytes);
        // A map head in front makes the decoders go further than the first byte.
        let mut framed = vec![0xa5];
        framed.extend_from_slice(&bytes);
        let _ = decode(&framed);
        let _ = decode_error(&framed);
    }

    #[test]
    fn mutated_vectors_never_panic(index in any::<prop::sample::Index>(),
                                   edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)) {
        let inputs = golden_inputs();
        let mut input = inputs[index.index(inputs.len())].clone();
        for (at, byte, op) in edits {
            if input.is_empty() { input.push(byte); continue; }
            let i = at.index(input.len());
            match op {
                0 => input[i] = byte,
                1 => input.insert(i, byte),
                _ => { input.truncate(i); }
            }
        }
        if let Ok(ev) = decode(&input) {
            // Whatever decodes re-encodes canonically and decodes to the same envelope.
            let mut out = vec![0; encoded_len(&ev)];
            let n = encode_into(&ev, &mut out).expect("exact size");
            prop_assert_eq!(decode(&out[..n]).expect("re-decodes"), ev);
        }
        if let Ok(e) = decode_error(&input) {
            let mut out = vec![0; error_encoded_len(&e)];
            let n = encode_error_into(&e, &mut out).expect("exact size");
            prop_assert_eq!(decode_error(&out[..n]).expect("re-decodes"), e);
        }
    }

    #[test]
    fn envelopes_round_trip(o in owned()) {
        let pairs: Vec<(&str, &str)> = o.extensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ev = o.envelope(&pairs);
        let len = encoded_len(&ev);
        let mut out = vec![0xee; len + 16];
        let n = encode_into(&ev, &mut out).expect("room");
        prop_assert_eq!(n, len);
        prop_assert!(out[n..].iter().all(|&b| b == 0xee), "wrote past encoded_len");
        let back = decode(&out[..n]).expect("decodes");
        prop_assert_eq!(back, ev);
        // Canonical: re-encoding what was decoded gives the same bytes.
        let mut again = vec![0; n];
        prop_assert_eq!(encode_into(&back, &mut again), Ok(n));
        prop_assert_eq!(&again[..], &out[..n]);
        prop_assert!(encode_into(&ev, &mut again[..n - 1]).is_err());
    }

    #[test]
    fn error_envelopes_round_trip(code in text(), message in ".{0,40}", runtime in "(go|rust)?", handler in ".{0,20}",
                                  retry in proptest::option::of((proptest::option::of(1..=u32::MAX),
                                         proptest::option::of(1..=i64::MAX as u64), proptest::option::of(any::<i64>())))) {
        let e = ErrorEnvelope {
            code: &code, message: &message, runtime: &runtime, handler: &handler,
            retry: retry.map(|(attempts, backoff_ns, not_before)| RetryPolicy { attempts, backoff_ns, not_before }),
        };
        let len = error_encoded_len(&e);
        let mut out = vec![0; len];
        prop_assert_eq!(encode_error_into(&e, &mut out), Ok(len));
        prop_assert_eq!(decode_error(&out).expect("decodes"), e);
    }
}
