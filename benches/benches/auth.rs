//! What the permission check costs per request: a publish decided from the
//! connection's cache (the steady state), decided afresh, and with
//! authentication off. The check runs once per Publish frame (a batch of
//! up to thousands of records), so per message it is smaller still.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use herald_broker::auth::{Access, GrantSpec, Grants, Need};

fn grants() -> Arc<Grants> {
    let spec = GrantSpec {
        publish: vec!["audit".into(), "orders.*".into(), "events.>".into()],
        subscribe: vec!["orders.> billing".into()],
        ..Default::default()
    };
    Arc::new(Grants::parse(&spec).expect("valid patterns"))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("permission check, publish");
    let mut off = Access::new("alice".into(), None);
    g.bench_function("auth off", |b| {
        b.iter(|| off.check(black_box(Need::Publish("events.eu.clicks"))))
    });
    let mut cached = Access::new("alice".into(), Some(grants()));
    g.bench_function("cached", |b| {
        b.iter(|| cached.check(black_box(Need::Publish("events.eu.clicks"))))
    });
    let g2 = grants();
    g.bench_function("uncached (new connection each time)", |b| {
        b.iter(|| {
            let mut a = Access::new("alice".into(), Some(g2.clone()));
            a.check(black_box(Need::Publish("events.eu.clicks")))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
