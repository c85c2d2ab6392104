//! The envelope decoder (zero-copy) and encoder on the event shapes tandem carries.
//! `cargo bench -p tandem --bench envelope`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tandem::envelope::{self, Envelope, Extensions};

fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let small = vec![7u8; 64];
    let large = vec![7u8; 64 << 10];
    let pairs = [
        ("region", "eu-west"),
        ("tenant", "acme"),
        ("priority", "high"),
    ];
    let full = Envelope {
        id: "order-123456",
        source: "/orders/api",
        ty: "order.created",
        specversion: "1.0",
        time: Some(1_790_000_000_000_000_000),
        subject: Some("orders/123456"),
        datacontenttype: Some("application/cbor"),
        correlationid: Some("order-123456"),
        causationid: Some("cart-98765"),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        attempt: 1,
        extensions: Extensions::from_pairs(&pairs).unwrap(),
        data: &small,
        ..Envelope::default()
    };
    let minimal = |data: &[u8]| {
        envelope::encode_to_vec(&Envelope {
            id: "1",
            source: "/b",
            ty: "demo.noop",
            specversion: "1.0",
            data,
            ..Envelope::default()
        })
    };
    vec![
        ("minimal 64 B", minimal(&small)),
        ("full 64 B", envelope::encode_to_vec(&full)),
        ("minimal 64 KiB", minimal(&large)),
    ]
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope decode");
    for (name, bytes) in shapes() {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| std::hint::black_box(envelope::decode(std::hint::black_box(&bytes)).unwrap()))
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope encode");
    for (name, bytes) in shapes() {
        let ev = envelope::decode(&bytes).unwrap();
        let mut out = vec![0u8; bytes.len() + 64];
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| envelope::encode_into(std::hint::black_box(&ev), &mut out).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
