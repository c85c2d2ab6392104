//! `cargo +nightly fuzz run decode` (from rust/tandem): no input makes the envelope
//! decoders panic, and whatever decodes re-encodes to canonical bytes that decode to the
//! same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::envelope::{
    decode, decode_error, encode_error_into, encode_into, encoded_len, error_encoded_len,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = decode(data) {
        let mut out = vec![0; encoded_len(&ev)];
        let n = encode_into(&ev, &mut out).expect("encoded_len is exact");
        assert_eq!(decode(&out[..n]).expect("canonical form decodes"), ev);
    }
    if let Ok(e) = decode_error(data) {
        let mut out = vec![0; error_encoded_len(&e)];
        let n = encode_error_into(&e, &mut out).expect("error_encoded_len is exact");
        assert_eq!(decode_error(&out[..n]).expect("canonical form decodes"), e);
    }
});
