//! Criterion benchmark of the allreduce algorithms over the in-process
//! communicator (ranks as threads): compares the algorithms' own costs
//! (copies, reductions, synchronisation) without MPI.
//!
//! ```text
//! cargo bench --bench allreduce
//! ```
//!
//! Each sample runs `iters` allreduces on every rank after a barrier; the
//! time is rank 0's. Throughput is reported in bytes of the buffer (algbw).
//! With more ranks than cores the threads time-share, as MPI ranks would.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringsgd::collectives::{Algorithm, Allreducer};
use ringsgd::comm::local::run_ranks;
use ringsgd::comm::Communicator;

fn time_allreduces(ranks: usize, len: usize, algorithm: Algorithm, iters: u64) -> Duration {
    let per_rank = run_ranks(ranks, |comm| {
        let mut reducer = Allreducer::new(algorithm);
        let mut buf = vec![1.0f32; len];
        // Warm: scratch and message buffers allocated once.
        reducer.allreduce_mean(&comm, &mut buf)?;
        comm.barrier()?;
        let t0 = Instant::now();
        for _ in 0..iters {
            reducer.allreduce_mean(&comm, black_box(&mut buf))?;
        }
        Ok(t0.elapsed())
    })
    .expect("in-process allreduce failed");
    per_rank[0]
}

fn allreduce(c: &mut Criterion) {
    for ranks in [2usize, 4] {
        let mut group = c.benchmark_group(format!("allreduce_local_p{ranks}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for bytes in [64usize << 10, 1 << 20, 4 << 20] {
            group.throughput(Throughput::Bytes(bytes as u64));
            for algorithm in Algorithm::ALL {
                group.bench_with_input(
                    BenchmarkId::new(algorithm.to_string(), bytes),
                    &bytes,
                    |b, &bytes| {
                        b.iter_custom(|iters| time_allreduces(ranks, bytes / 4, algorithm, iters))
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, allreduce);
criterion_main!(benches);
