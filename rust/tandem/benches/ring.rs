//! The submission/completion ring alone: one push and one pop, uncontended and with producers
//! on other threads. `cargo bench -p tandem --features bench-internals --bench ring`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tandem::BenchRing;

fn push_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    let ring = BenchRing::new(4096);
    g.bench_function("push+pop", |b| {
        b.iter(|| {
            assert!(ring.push(std::hint::black_box(7)));
            std::hint::black_box(ring.pop())
        })
    });
    let ring = BenchRing::new(4096);
    g.bench_function("push 64 then pop 64", |b| {
        b.iter(|| {
            for i in 0..64 {
                assert!(ring.push(i));
            }
            for _ in 0..64 {
                std::hint::black_box(ring.pop());
            }
        })
    });
    // Another thread keeps pushing while the measured thread pops (the runtime's shape: Go
    // goroutines produce, one poller consumes).
    let ring = Arc::new(BenchRing::new(4096));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ring, stop) = (ring.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if ring.push(i) {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        })
    };
    g.bench_function("pop with a producer thread", |b| {
        b.iter(|| {
            loop {
                if let Some(t) = ring.pop() {
                    break std::hint::black_box(t);
                }
                std::hint::spin_loop();
            }
        })
    });
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    g.finish();
}

criterion_group!(benches, push_pop);
criterion_main!(benches);
