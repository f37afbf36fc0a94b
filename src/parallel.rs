//! A compute pool of exactly the number of cores granted to this process.
//!
//! Each training process is given an explicit core count `N` (a parameter,
//! never a global). [`ComputePool::new`] builds a dedicated rayon pool of
//! exactly `N` worker threads; with `N = 1` no pool is built at all and every
//! "parallel" helper runs sequentially on the calling thread.
//!
//! # What runs where
//!
//! * [`ComputePool::install`] runs its closure on one of the pool's workers
//!   (or inline on the caller when `cores == 1`). Nested `install` calls from
//!   inside the pool run directly, without a hop.
//! * The `for_each_*` helpers split a slice into chunks and run the closure
//!   on each chunk: on the pool's workers (work-stealing) when `cores > 1`,
//!   in order on the calling thread when `cores == 1`. They never touch
//!   rayon's global pool, so a process never uses more threads than granted
//!   (MPI, which is called from the caller's thread, is outside the count).
//!
//! # Determinism
//!
//! The helpers never decide *what* is computed, only *where*: callers choose
//! chunk boundaries that do not depend on the core count and combine partial
//! results in a fixed order, so results are bitwise identical for any `N`.

use crate::{Error, Result};
use rayon::prelude::*;

/// A pool of exactly `cores` compute threads (none when `cores == 1`).
///
/// ```
/// use ringsgd::parallel::ComputePool;
/// let pool = ComputePool::new(2)?;
/// let mut v = vec![1.0f32; 1000];
/// pool.for_each_chunk_mut(&mut v, 100, |_, c| c.iter_mut().for_each(|x| *x *= 2.0));
/// assert!(v.iter().all(|&x| x == 2.0));
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Debug)]
pub struct ComputePool {
    cores: usize,
    pool: Option<rayon::ThreadPool>,
}

impl ComputePool {
    /// A pool of exactly `cores` threads. `cores == 1` builds no pool: work
    /// runs on the calling thread. `cores == 0` is an error naming `cores`.
    pub fn new(cores: usize) -> Result<ComputePool> {
        if cores == 0 {
            return Err(Error::invalid("cores must be >= 1 (got 0)"));
        }
        let pool = if cores == 1 {
            None
        } else {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(cores)
                    .thread_name(|i| format!("ringsgd-compute-{i}"))
                    .build()
                    .map_err(|e| {
                        Error::invalid(format!("cannot build a pool of {cores} cores: {e}"))
                    })?,
            )
        };
        Ok(ComputePool { cores, pool })
    }

    /// `self` when `work` (elements touched, or multiply-adds) is worth
    /// splitting over threads, else a pool that runs everything inline on
    /// the calling thread. Waking a second thread and joining it costs
    /// microseconds (tens when it was asleep), more than copying a few
    /// thousand floats, so small loops (bias and transposes, ReLU masks of
    /// the linear layers) stay on one thread. Never changes results.
    ///
    /// ```
    /// use ringsgd::parallel::ComputePool;
    /// let pool = ComputePool::new(2)?;
    /// assert_eq!(pool.for_work(100).cores(), 1);
    /// assert_eq!(pool.for_work(1 << 20).cores(), 2);
    /// # Ok::<(), ringsgd::Error>(())
    /// ```
    pub fn for_work(&self, work: usize) -> &ComputePool {
        /// Below this much work a loop runs on one thread.
        const MIN_PARALLEL_WORK: usize = 1 << 15;
        static INLINE: ComputePool = ComputePool {
            cores: 1,
            pool: None,
        };
        if work < MIN_PARALLEL_WORK {
            &INLINE
        } else {
            self
        }
    }

    /// The number of compute threads (the `cores` given to [`ComputePool::new`]).
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Runs `f` inside the pool (on a worker thread) and returns its result;
    /// runs it inline on the caller when `cores == 1`.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The index of the calling thread's workspace slot, in `0..cores()`.
    ///
    /// Inside the pool it is the rayon worker index; on the caller's thread
    /// (`cores == 1`, or outside the pool) it is 0. Used to pick per-thread
    /// scratch buffers; correctness never depends on it (slots are locked).
    pub fn slot(&self) -> usize {
        if self.pool.is_none() {
            return 0;
        }
        rayon::current_thread_index().unwrap_or(0) % self.cores
    }

    /// Calls `f(i, chunk)` for every `chunk_len`-sized chunk of `data` (the
    /// last may be shorter), `i` being the chunk index.
    pub fn for_each_chunk_mut<T, F>(&self, data: &mut [T], chunk_len: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Send + Sync,
    {
        assert!(chunk_len > 0, "chunk_len must be positive");
        match &self.pool {
            None => data
                .chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c)),
            Some(p) => p.install(|| {
                data.par_chunks_mut(chunk_len)
                    .enumerate()
                    .for_each(|(i, c)| f(i, c))
            }),
        }
    }

    /// Like [`for_each_chunk_mut`](Self::for_each_chunk_mut) over two slices
    /// chunked in lockstep: `f(i, &mut a[i*la..], &mut b[i*lb..])`. Both
    /// slices must have the same number of chunks.
    pub fn for_each_chunk_mut2<T, U, F>(&self, a: &mut [T], la: usize, b: &mut [U], lb: usize, f: F)
    where
        T: Send,
        U: Send,
        F: Fn(usize, &mut [T], &mut [U]) + Send + Sync,
    {
        assert!(la > 0 && lb > 0, "chunk lengths must be positive");
        assert_eq!(
            a.len().div_ceil(la),
            b.len().div_ceil(lb),
            "chunk counts differ"
        );
        match &self.pool {
            None => a
                .chunks_mut(la)
                .zip(b.chunks_mut(lb))
                .enumerate()
                .for_each(|(i, (x, y))| f(i, x, y)),
            Some(p) => p.install(|| {
                a.par_chunks_mut(la)
                    .zip(b.par_chunks_mut(lb))
                    .enumerate()
                    .for_each(|(i, (x, y))| f(i, x, y))
            }),
        }
    }

    /// Three slices chunked in lockstep; see
    /// [`for_each_chunk_mut2`](Self::for_each_chunk_mut2).
    #[allow(clippy::too_many_arguments)]
    pub fn for_each_chunk_mut3<T, U, V, F>(
        &self,
        a: &mut [T],
        la: usize,
        b: &mut [U],
        lb: usize,
        c: &mut [V],
        lc: usize,
        f: F,
    ) where
        T: Send,
        U: Send,
        V: Send,
        F: Fn(usize, &mut [T], &mut [U], &mut [V]) + Send + Sync,
    {
        assert!(la > 0 && lb > 0 && lc > 0, "chunk lengths must be positive");
        let n = a.len().div_ceil(la);
        assert!(
            n == b.len().div_ceil(lb) && n == c.len().div_ceil(lc),
            "chunk counts differ"
        );
        match &self.pool {
            None => a
                .chunks_mut(la)
                .zip(b.chunks_mut(lb))
                .zip(c.chunks_mut(lc))
                .enumerate()
                .for_each(|(i, ((x, y), z))| f(i, x, y, z)),
            Some(p) => p.install(|| {
                a.par_chunks_mut(la)
                    .zip(b.par_chunks_mut(lb))
                    .zip(c.par_chunks_mut(lc))
                    .enumerate()
                    .for_each(|(i, ((x, y), z))| f(i, x, y, z))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_cores_is_an_error_naming_cores() {
        let e = ComputePool::new(0).unwrap_err().to_string();
        assert!(e.contains("cores"), "{e}");
    }

    #[test]
    fn pool_has_exactly_n_threads() {
        for n in 1..=3 {
            let pool = ComputePool::new(n).unwrap();
            assert_eq!(pool.cores(), n);
            let seen = std::sync::Mutex::new(std::collections::HashSet::new());
            let mut v = vec![0u8; 64];
            pool.for_each_chunk_mut(&mut v, 1, |_, _| {
                seen.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(std::time::Duration::from_millis(2));
            });
            let k = seen.lock().unwrap().len();
            assert!(k <= n, "{k} threads used with {n} cores");
            let threads = pool.install(rayon::current_num_threads);
            if n > 1 {
                assert_eq!(threads, n);
            }
            assert!(pool.slot() < n);
        }
    }

    #[test]
    fn one_core_runs_on_the_caller() {
        let pool = ComputePool::new(1).unwrap();
        let me = std::thread::current().id();
        let mut v = vec![0u8; 8];
        pool.for_each_chunk_mut(&mut v, 2, |_, _| {
            assert_eq!(std::thread::current().id(), me)
        });
        assert_eq!(pool.install(|| std::thread::current().id()), me);
    }

    #[test]
    fn lockstep_chunks() {
        let pool = ComputePool::new(2).unwrap();
        let mut a = vec![0usize; 10];
        let mut b = vec![0usize; 5];
        let mut c = vec![0usize; 15];
        pool.for_each_chunk_mut3(&mut a, 2, &mut b, 1, &mut c, 3, |i, x, y, z| {
            x.fill(i);
            y.fill(i);
            z.fill(i);
        });
        assert_eq!(b, vec![0, 1, 2, 3, 4]);
        assert_eq!(a[9], 4);
        assert_eq!(c[14], 4);
    }
}
