//! A warm training step (the trainer's own [`Trainer::step`]: forward,
//! backward, allreduce, update) allocates nothing, and neither does a warm
//! batch fill for data of any shape and kind: counted with a global
//! allocator, per thread (so the two tests do not see each other's).

use ndarray::Array4;
use ringsgd::comm::local::LocalComm;
use ringsgd::data::{synthetic, Augmentation, BatchBuilder, Dataset, Normalizer, Shape};
use ringsgd::nn::Model;
use ringsgd::optim::LrSchedule;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{TrainConfig, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread: with one core the whole step runs
    /// on the test's thread, and the harness's own threads (which may
    /// allocate while a loaded machine makes them wake up) do not count.
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down has no thread-locals left.
    let _ = MINE.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_training_step_does_not_allocate() {
    // Stride-1 and stride-2 convs (direct and GEMM paths), pooling, linear.
    let spec =
        "conv3x3(8,p1) relu conv3x3(8,s2,p1) relu maxpool2 flatten linear(16) relu linear(4)";
    let x = Array4::from_shape_fn((6, 3, 16, 16), |(b, c, h, w)| {
        ((b + c * 3 + h * w) % 7) as f32 - 3.0
    });
    let labels = [0u8, 1, 2, 3, 0, 1];
    let mut cfg = TrainConfig::pinet_defaults(labels.len(), 1);
    cfg.schedule = LrSchedule::Constant;
    cfg.base_lr = 0.01;
    // Verification is a collective of its own (it allocates its message).
    cfg.verify_every = None;
    let world = LocalComm::world(1).unwrap();
    for cores in [1, 2] {
        let pool = ComputePool::new(cores).unwrap();
        let model = Model::from_spec(spec, [3, 16, 16], 0).unwrap();
        let mut trainer = Trainer::new(&world[0], pool, model, cfg.clone()).unwrap();
        // Warm-up: workspaces grow, and each pool thread makes its one-time
        // thread-local registrations (rayon/crossbeam) on its first steal.
        for _ in 0..5 {
            trainer.step(x.view(), &labels).unwrap();
        }
        // One thread runs every closure of ours inline: nothing may
        // allocate. With a pool the same closures run on workers, and rayon
        // itself may allocate now and then (its work-stealing deques grow and
        // shrink with the number of queued jobs; old buffers are freed
        // through crossbeam's epoch reclamation), depending on timing: usually
        // 0, but 3 in 20 steps in 1 of 3 runs on a loaded 2-core machine.
        // That count is printed, not asserted; the 1-core run covers our code.
        const STEPS: usize = 20;
        let before = ALLOCS.load(Ordering::Relaxed);
        let mine_before = MINE.with(|c| c.get());
        for _ in 0..STEPS {
            trainer.step(x.view(), &labels).unwrap();
        }
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        let mine = MINE.with(|c| c.get()) - mine_before;
        if cores == 1 {
            assert_eq!(
                mine, 0,
                "{mine} allocations in {STEPS} warm steps with 1 core ({n} in the process)"
            );
        } else {
            eprintln!("{n} allocations (inside rayon) in {STEPS} warm steps with {cores} cores");
        }
    }
}

#[test]
fn warm_batch_fills_do_not_allocate_for_any_shape() {
    let mono = synthetic::generate_shaped(Shape::MNIST, 40, 1, 0).unwrap();
    let cifar = synthetic::generate(40, 2);
    let shape = Shape::new(3, 4, 5);
    let values: Vec<f32> = (0..40 * shape.sample_len())
        .map(|i| (i % 17) as f32)
        .collect();
    let labels: Vec<u8> = (0..40).map(|i| (i % 3) as u8).collect();
    let tab = Dataset::new(shape, values, labels, 3).unwrap();
    let idx: Vec<usize> = (0..32).map(|i| (i * 7) % 40).collect();
    for ds in [&mono, &cifar, &tab] {
        let norm = Normalizer::from_dataset(ds).unwrap();
        let mut b = BatchBuilder::new(norm, Some(Augmentation::crop(2))).unwrap();
        // Warm: the buffers grow to the batch and sample size once.
        b.fill_train(ds, &idx, 1, 0, 0).unwrap();
        b.fill_eval_range(ds, 0..32).unwrap();
        let before = MINE.with(|c| c.get());
        for epoch in 0..5 {
            let batch = b.fill_train(ds, &idx, 1, epoch, 0).unwrap();
            assert_eq!(batch.len(), 32);
            b.fill_eval(ds, &idx[..10]).unwrap();
            b.fill_eval_range(ds, 8..40).unwrap();
        }
        let mine = MINE.with(|c| c.get()) - before;
        assert_eq!(
            mine,
            0,
            "{mine} allocations in warm fills of {} data",
            ds.shape()
        );
    }
}
