//! The conformance vectors Go's suite runs against demo.upper and its Go twin, run here
//! against the Rust demo.upper without Go; and the harness's own behaviour on mismatches and
//! bad input.

use std::path::PathBuf;

use tandem::Registry;
use tandem::conform::{FileErrorKind, Harness, RunError, Vectors, Verdict, assert_conforms, check};

fn vectors(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../ffi/testdata/conformance")
        .join(name)
}

fn demo() -> Registry {
    let mut reg = Registry::new();
    tandem_native::register(&mut reg);
    reg
}

const HEADER: &str = "{\"format\": \"tandem.conformance\", \"version\": 1}\n";

#[test]
fn demo_upper_passes_the_vectors_its_go_twin_passes() {
    assert_conforms(demo(), "demo.upper", vectors("upper.jsonl"));
    let report = check(demo(), "demo.upper", vectors("upper.jsonl")).unwrap();
    assert_eq!(report.results.len(), 12, "{report}");
}

#[test]
fn a_handler_that_differs_fails_case_by_case_with_what_differs() {
    // demo.echo is demo.upper without the upper-casing.
    let report = check(demo(), "demo.echo", vectors("upper.jsonl")).unwrap();
    assert!(!report.ok());
    let text = report.to_string();
    assert!(
        text.contains("upper.jsonl on route demo.echo: 12 cases, 2 passed, 10 failed"),
        "{text}"
    );
    assert!(text.contains("upper.jsonl:9: case \"lower-case ascii\"\n    reply: got  \"hello\" (5 bytes)\n           want \"HELLO\" (5 bytes)\n           first difference at byte 0: got 68 65 6c 6c 6f, want 48 45 4c 4c 4f"), "{text}");
    assert!(
        !text.contains("case \"empty data\""),
        "a passing case is printed:\n{text}"
    );
    let panicked =
        std::panic::catch_unwind(|| assert_conforms(demo(), "demo.echo", vectors("upper.jsonl")));
    assert!(
        panicked.is_err(),
        "assert_conforms passed a handler that differs"
    );
}

/// One delivery each: a retry is judged as the handler gave it, and the attempt a case gives
/// is the one the handler sees; failures carry their codes; a panic is contained.
#[test]
fn outcomes_of_one_delivery_with_codes() {
    let v = Vectors::parse(
        "cases.jsonl",
        format!(
            "{HEADER}{}\n{}\n{}\n{}\n{}\n",
            r#"{"case": "first delivery", "event": {"type": "demo.flaky"}, "expect": {"outcome": "retry", "code": "unavailable"}}"#,
            r#"{"case": "third delivery", "event": {"attempt": 3}, "expect": {"outcome": "ack", "reply": "3"}}"#,
            r#"{"case": "wrong code", "event": {}, "expect": {"outcome": "retry", "code": "invalid"}}"#,
            r#"{"case": "wrong outcome", "event": {}, "expect": {"outcome": "term"}}"#,
            r#"{"case": "too large", "event": {"data": {"text": "a", "repeat": 70000}}, "expect": {"outcome": "ack"}}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    let mut h = Harness::new(demo()).unwrap();
    let r = h.check("demo.flaky", &v).unwrap();
    let lines: Vec<String> = r.results.iter().map(|c| c.diff("cases.jsonl")).collect();
    assert_eq!(lines[0], "");
    assert_eq!(lines[1], "");
    assert_eq!(
        lines[2],
        "cases.jsonl:4: case \"wrong code\"\n    code: got \"unavailable\", want \"invalid\" (message: attempt 1 of 3)"
    );
    assert_eq!(
        lines[3],
        "cases.jsonl:5: case \"wrong outcome\"\n    outcome: got retry, want term (unavailable: attempt 1 of 3)"
    );
    assert!(
        lines[4].starts_with("cases.jsonl:6: case \"too large\": no outcome: event too large: "),
        "{}",
        lines[4]
    );
    let got = r.results[0].got.as_ref().unwrap();
    assert_eq!(
        (got.verdict, got.code.as_str()),
        (Verdict::Retry, "unavailable")
    );

    let panics = Vectors::parse(
        "p.jsonl",
        format!("{HEADER}{}\n", r#"{"case": "panic", "event": {"data": "panic"}, "expect": {"outcome": "term", "code": "panic"}}"#).as_bytes(),
    )
    .unwrap();
    assert!(h.check("demo.panic", &panics).unwrap().ok());
    let fails = Vectors::parse(
        "f.jsonl",
        format!(
            "{HEADER}{}\n{}\n",
            r#"{"case": "term", "event": {"data": "term"}, "expect": {"outcome": "term", "code": "invalid"}}"#,
            r#"{"case": "retry", "event": {"data": "retry"}, "expect": {"outcome": "retry", "code": "unavailable"}}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    let r = h.check("demo.fail", &fails).unwrap();
    assert!(r.ok(), "{r}");
}

#[test]
fn an_unknown_route_is_an_error_naming_it() {
    match check(demo(), "no.such", vectors("upper.jsonl")) {
        Err(RunError::NoRoute { file, route, known }) => {
            assert!(file.ends_with("upper.jsonl"));
            assert_eq!(route, "no.such");
            assert!(known.iter().any(|t| t == "demo.upper"));
        }
        other => panic!("check on an unknown route = {other:?}"),
    }
    match check(demo(), "demo.upper", vectors("no-such.jsonl")) {
        Err(RunError::File(e)) => {
            assert_eq!(e.kind, FileErrorKind::Io);
            assert!(e.to_string().contains("no-such.jsonl"), "{e}");
        }
        other => panic!("check of a missing file = {other:?}"),
    }
}

/// The table of bad files Go's reader refuses (go/tandem/conform): this reader refuses each
/// alike, at the same line, naming the same case, with the same kind of defect.
#[test]
fn bad_files_are_refused_as_go_refuses_them() {
    let raw = std::fs::read(vectors("bad_files.json")).unwrap();
    let table: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let files = table["files"].as_array().unwrap();
    assert!(files.len() >= 20);
    for f in files {
        let name = f["name"].as_str().unwrap();
        let text = f["text"].as_str().unwrap();
        let kind = match f["error"].as_str().unwrap() {
            "version" => FileErrorKind::Version,
            "malformed" => FileErrorKind::Malformed,
            "unknown_outcome" => FileErrorKind::UnknownOutcome,
            other => panic!("unknown kind {other}"),
        };
        let e = match Vectors::parse("cases.jsonl", text.as_bytes()) {
            Err(e) => e,
            Ok(_) => panic!("{name}: parsed"),
        };
        assert_eq!(e.kind, kind, "{name}: {e}");
        assert_eq!(e.line as u64, f["line"].as_u64().unwrap(), "{name}: {e}");
        assert_eq!(e.case.as_deref(), f["case"].as_str(), "{name}: {e}");
        assert!(e.to_string().starts_with("cases.jsonl:"), "{name}: {e}");
    }
    // Text that is not UTF-8 cannot be written in the JSON table.
    let mut text = HEADER.as_bytes().to_vec();
    text.extend_from_slice(b"{\"case\": \"\xff\"}\n");
    let e = Vectors::parse("cases.jsonl", &text).unwrap_err();
    assert_eq!((e.kind, e.line), (FileErrorKind::Malformed, 2), "{e}");
}

#[test]
fn every_form_of_bytes_reads_as_go_reads_it() {
    let v = Vectors::parse(
        "cases.jsonl",
        format!(
            "# a comment\n\n{HEADER}{}\n  # an indented comment\n{}\n{}\n",
            r#"{"case": "text", "event": {"type": "t", "data": "héllo", "attempt": 2, "extensions": {"k": "v"}}, "expect": {"outcome": "ack", "reply": "x"}}"#,
            r#"{"case": "hex", "event": {"data": {"hex": "ff00"}}, "expect": {"outcome": "ack", "reply": {"base64": "/wA="}}}"#,
            r#"{"case": "repeat", "event": {"data": {"text": "ab", "repeat": 3}}, "expect": {"outcome": "retry", "code": "unavailable"}}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    let c = &v.cases[0];
    assert_eq!(
        (
            c.line,
            c.event.id.as_str(),
            c.event.source.as_str(),
            c.event.ty.as_str()
        ),
        (4, "text", "/conformance", "t")
    );
    assert_eq!(
        (c.event.data.as_slice(), c.event.attempt),
        ("héllo".as_bytes(), 2)
    );
    assert_eq!(c.event.extensions, [("k".to_owned(), "v".to_owned())]);
    assert_eq!(c.expect, tandem::conform::Expect::Ack(Some(b"x".to_vec())));
    let c = &v.cases[1];
    assert_eq!((c.line, c.event.data.as_slice()), (6, &[0xff, 0][..]));
    assert_eq!(c.expect, tandem::conform::Expect::Ack(Some(vec![0xff, 0])));
    let c = &v.cases[2];
    assert_eq!(c.event.data, b"ababab");
    assert_eq!(
        c.expect,
        tandem::conform::Expect::Retry(Some("unavailable".to_owned()))
    );
}
