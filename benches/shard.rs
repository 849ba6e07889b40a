//! Criterion benchmark of `ShardMap::owner()` for 4, 16 and 64 shards, uniform and weighted.
//! Run through `scripts/bench` (or `cargo bench --bench shard`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

fn owner(c: &mut Criterion) {
    let ws: Vec<WorkspaceId> = (0..1024)
        .map(|i| WorkspaceId::new(format!("workspace-{i:05}")).unwrap())
        .collect();
    let mut group = c.benchmark_group("shard_owner");
    for n in [4u32, 16, 64] {
        let uniform = ShardMap::uniform(n);
        let mut weighted = uniform.clone();
        for s in &mut weighted.shards {
            s.weight = 1.0 + f64::from(s.id % 3);
        }
        for (kind, map) in [("uniform", &uniform), ("weighted", &weighted)] {
            group.bench_with_input(BenchmarkId::new(kind, n), map, |b, map| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(map.owner(black_box(&ws[i])))
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .sample_size(30);
    targets = owner
}
criterion_main!(benches);
