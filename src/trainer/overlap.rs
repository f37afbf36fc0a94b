//! One training step with the gradient allreduce overlapped with backward.
//!
//! Backward runs on a compute thread (and its pool); it hands each part of
//! the gradient over as soon as it is final, last layer first. Parts are
//! grouped into buckets; when a bucket is complete, the thread that owns
//! the communicator (the caller's: MPI is used from one thread only) starts
//! that bucket's ring allreduce and drives every ring in flight, sleeping
//! briefly between polls so that it takes no noticeable time from the
//! compute threads, even on one core. Compute threads never call the
//! communicator and never wait for the network.
//!
//! Each bucket is reduced by its own ring over its own values, so the
//! result is bitwise reproducible for a given world size and bucket layout,
//! whatever the timing and the core count.

use std::ops::Range;
use std::sync::mpsc;
use std::time::Instant;

use ndarray::ArrayView4;

use crate::collectives::ring::{tags_per_ring, RingAllreduce, RingScratch};
use crate::collectives::Wire;
use crate::comm::exchange::{self, MAX_TAG};
use crate::comm::Transport;
use crate::error::{Error, Result};
use crate::model::{BatchStats, Trainable};
use crate::parallel::ComputePool;

/// How often the rings in flight are driven while this rank computes:
/// often enough to keep the link busy (the kernel's socket buffers hold
/// well over 250 us of a 1 Gbit/s link), rarely enough to leave the compute
/// threads alone. Polling every 50 us instead cost PiNet's backward 20-45%
/// on the virtual cluster (measured), every 1 ms about 10%.
const RING_NAP: std::time::Duration = std::time::Duration::from_micros(250);
/// How long to sleep on the compute thread's channel when nothing is in
/// flight (a message ends the sleep at once).
const IDLE_NAP: std::time::Duration = std::time::Duration::from_millis(1);

/// Contiguous ranges of the flat gradient, in the order backward completes
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketPlan {
    buckets: Vec<Range<usize>>,
}

impl BucketPlan {
    /// Groups `parts` (the model's gradient parts in backward order, see
    /// [`Trainable::grad_parts`]) into buckets of at least `bucket_bytes` (the
    /// last one may be smaller). Parts that do not tile `0..n` from the top
    /// down make one bucket of everything.
    pub(crate) fn new(parts: &[Range<usize>], n: usize, bucket_bytes: usize) -> BucketPlan {
        let tiles = parts.first().is_some_and(|p| p.end == n)
            && parts.last().is_some_and(|p| p.start == 0)
            && parts.windows(2).all(|w| w[1].end == w[0].start);
        if !tiles || n == 0 {
            return BucketPlan {
                buckets: std::iter::once(0..n).collect(),
            };
        }
        let want = bucket_bytes.div_ceil(4).max(1);
        let mut buckets: Vec<Range<usize>> = Vec::new();
        let mut open: Option<Range<usize>> = None;
        for part in parts {
            let b = match open.take() {
                Some(b) => part.start..b.end,
                None => part.clone(),
            };
            if b.len() >= want {
                buckets.push(b);
            } else {
                open = Some(b);
            }
        }
        buckets.extend(open);
        BucketPlan { buckets }
    }

    /// The buckets, in the order they complete.
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> &[Range<usize>] {
        &self.buckets
    }

    fn bucket_of(&self, offset: usize) -> usize {
        self.buckets
            .iter()
            .position(|b| b.contains(&offset))
            .unwrap_or(0)
    }

    /// A short description for logs: bucket sizes in values.
    pub(crate) fn describe(&self) -> String {
        let sizes: Vec<String> = self.buckets.iter().map(|b| b.len().to_string()).collect();
        format!("{} bucket(s) of {} values", sizes.len(), sizes.join(" + "))
    }
}

/// When a step's phases ended, for its time split.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverlapTimes {
    /// Backward (and forward) done, seconds after the step began.
    pub compute: f64,
    /// Every bucket reduced, seconds after the step began.
    pub end: f64,
    /// Seconds of communication that ran while compute was still going.
    pub hidden: f64,
}

/// The overlapped step's buffers, kept between steps.
#[derive(Debug)]
pub(crate) struct Overlap {
    plan: BucketPlan,
    /// What each rank contributes (copied from the model's gradient as
    /// backward finishes each part), averaged in place: the gradient the
    /// optimizer applies.
    staging: Vec<f32>,
    scratch: Vec<RingScratch>,
    segment_len: usize,
    wire: Wire,
    bytes_sent: usize,
    /// The thread backward runs on (kept between steps: a thread made
    /// every step would start each one with cold stack pages).
    worker: rayon::ThreadPool,
}

enum Msg<'a> {
    Bucket(usize, &'a mut [f32]),
    Done(Result<BatchStats>, Instant),
}

impl Overlap {
    /// Buffers for a model of `n` parameters whose gradient comes in
    /// `parts` ([`Trainable::grad_parts`]), on `ranks` ranks.
    pub(crate) fn new(
        parts: &[Range<usize>],
        n: usize,
        ranks: usize,
        bucket_bytes: usize,
        segment_bytes: usize,
        wire: Wire,
    ) -> Result<Overlap> {
        let plan = BucketPlan::new(parts, n, bucket_bytes);
        let tags = plan.buckets.len() as u64 * tags_per_ring(ranks) as u64;
        if tags > MAX_TAG as u64 + 1 {
            return Err(Error::invalid(format!(
                "{} gradient buckets on {ranks} ranks need {tags} message tags, more than the \
                 {} available: use larger buckets",
                plan.buckets.len(),
                MAX_TAG + 1
            )));
        }
        let nb = plan.buckets.len();
        let worker = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "ringsgd-backward".to_string())
            .build()
            .map_err(|e| Error::invalid(format!("cannot start the backward thread: {e}")))?;
        Ok(Overlap {
            worker,
            plan,
            staging: vec![0.0; n],
            scratch: vec![RingScratch::default(); nb],
            segment_len: (segment_bytes / 4).max(1),
            wire,
            bytes_sent: 0,
        })
    }

    pub(crate) fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    /// The averaged gradient of the last step.
    pub(crate) fn reduced(&self) -> &[f32] {
        &self.staging
    }

    /// Bytes this rank put on the wire in the last step.
    pub(crate) fn bytes_sent(&self) -> usize {
        self.bytes_sent
    }

    /// Forward and backward of `model` on a batch while the buckets are
    /// averaged over `comm`'s ranks, in place, into
    /// [`reduced`](Self::reduced); this rank's gradient is weighted by
    /// `scale` first (its share of the global batch, see `balance`).
    pub(crate) fn step<M: Trainable>(
        &mut self,
        comm: &dyn Transport,
        model: &mut M,
        pool: &ComputePool,
        images: ArrayView4<'_, f32>,
        labels: &[u8],
        scale: f32,
    ) -> Result<(BatchStats, OverlapTimes)> {
        let (p, r) = (comm.size(), comm.rank());
        let t0 = Instant::now();
        let plan = &self.plan;
        let nb = plan.buckets.len();
        let stage = split_into(&mut self.staging, &plan.buckets);
        let scratch: Vec<Option<&mut RingScratch>> = self.scratch.iter_mut().map(Some).collect();
        let (seg, wire) = (self.segment_len, self.wire);
        let (tx, rx) = mpsc::channel::<Msg<'_>>();
        let result = self.worker.in_place_scope(|sc| {
            sc.spawn(move |_| compute(model, pool, (images, labels), plan, stage, scale, tx));
            exchange::run(comm, |x| {
                let mut scratch = scratch;
                let mut rings: Vec<Option<RingAllreduce<'_>>> = (0..nb).map(|_| None).collect();
                let mut done: Option<(Result<BatchStats>, Instant)> = None;
                // When each bucket's ring started and finished.
                let mut spans: Vec<(Instant, Option<Instant>)> = Vec::with_capacity(nb);
                let mut span_of = vec![usize::MAX; nb];
                let mut stash: Option<Msg<'_>> = None;
                loop {
                    while let Some(msg) = stash.take().or_else(|| rx.try_recv().ok()) {
                        match msg {
                            Msg::Bucket(b, data) => {
                                let scr = scratch[b].take().expect("each bucket is sent once");
                                let tag0 = b as u32 * tags_per_ring(p);
                                let mut ring =
                                    RingAllreduce::new(p, r, data, scr, seg, wire, true, tag0)?;
                                ring.start(x)?;
                                span_of[b] = spans.len();
                                spans.push((Instant::now(), None));
                                rings[b] = Some(ring);
                            }
                            Msg::Done(res, at) => done = Some((res, at)),
                        }
                    }
                    let mut any = false;
                    for (b, ring) in rings.iter_mut().enumerate() {
                        let Some(ring) = ring else { continue };
                        if !ring.is_done() {
                            any |= ring.advance(x)?;
                            if ring.is_done() {
                                spans[span_of[b]].1 = Some(Instant::now());
                            }
                        }
                    }
                    let all_reduced = rings
                        .iter()
                        .all(|g| g.as_ref().is_some_and(|g| g.is_done()));
                    if all_reduced {
                        if let Some((res, at)) = done.take() {
                            let sent = rings.iter().flatten().map(|g| g.bytes_sent()).sum();
                            return Ok((res, at, spans, sent));
                        }
                    }
                    if any {
                        continue;
                    }
                    if done.is_none() {
                        // This rank still computes: sleep on the compute
                        // thread's channel (a new bucket wakes this thread at
                        // once), testing the rings in flight every NAP.
                        let nap = if x.pending() > 0 { RING_NAP } else { IDLE_NAP };
                        match rx.recv_timeout(nap) {
                            Ok(msg) => stash = Some(msg),
                            Err(mpsc::RecvTimeoutError::Timeout) => x.keep_alive(),
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                return Err(Error::invalid(
                                    "the backward thread ended without reporting its result",
                                ))
                            }
                        }
                    } else {
                        // Only peers can end this wait now: under the deadline.
                        x.wait_any(true, &mut || false)?;
                    }
                }
            })
        });
        let (stats, computed, spans, sent) = result?;
        self.bytes_sent = sent;
        let stats = stats?;
        let end = t0.elapsed().as_secs_f64();
        let compute = computed.duration_since(t0).as_secs_f64();
        let hidden = hidden_seconds(&spans, computed);
        Ok((
            stats,
            OverlapTimes {
                compute,
                end,
                hidden,
            },
        ))
    }
}

/// Seconds during which at least one ring was in flight before `computed`
/// (the union of the rings' spans, clipped there).
fn hidden_seconds(spans: &[(Instant, Option<Instant>)], computed: Instant) -> f64 {
    let mut iv: Vec<(Instant, Instant)> = spans
        .iter()
        .map(|&(s, e)| (s, e.unwrap_or(computed).min(computed)))
        .filter(|(s, e)| s < e)
        .collect();
    iv.sort();
    let mut total = 0.0;
    let mut cur: Option<(Instant, Instant)> = None;
    for (s, e) in iv {
        cur = match cur {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce.duration_since(cs).as_secs_f64();
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = cur {
        total += ce.duration_since(cs).as_secs_f64();
    }
    total
}

/// The compute thread: backward, handing each bucket over when complete.
/// Buckets not complete when the step fails are sent zero-filled, so that
/// the peers' rings still finish; the error comes after them.
fn compute<'a, M: Trainable>(
    model: &mut M,
    pool: &ComputePool,
    (images, labels): (ArrayView4<'_, f32>, &[u8]),
    plan: &BucketPlan,
    mut stage: Vec<Option<&'a mut [f32]>>,
    scale: f32,
    tx: mpsc::Sender<Msg<'a>>,
) {
    let mut filled = vec![0usize; plan.buckets.len()];
    let res = model.train_step_with(pool, images, labels, &mut |off, vals| {
        let b = plan.bucket_of(off);
        let range = &plan.buckets[b];
        if let Some(dst) = stage[b].as_mut() {
            let dst = &mut dst[off - range.start..][..vals.len()];
            if scale == 1.0 {
                dst.copy_from_slice(vals);
            } else {
                for (d, &v) in dst.iter_mut().zip(vals) {
                    *d = v * scale;
                }
            }
            filled[b] += vals.len();
            if filled[b] == range.len() {
                if let Some(done) = stage[b].take() {
                    let _ = tx.send(Msg::Bucket(b, done));
                }
            }
        }
    });
    for (b, slot) in stage.iter_mut().enumerate() {
        if let Some(rest) = slot.take() {
            rest.fill(0.0);
            let _ = tx.send(Msg::Bucket(b, rest));
        }
    }
    let res = match res {
        Ok(_) if filled.iter().zip(&plan.buckets).any(|(f, b)| *f != b.len()) => {
            Err(Error::invalid(format!(
                "the model's backward did not hand over its whole gradient in its declared \
                 parts ({})",
                plan.describe()
            )))
        }
        other => other,
    };
    let _ = tx.send(Msg::Done(res, Instant::now()));
}

/// Cuts `buf` into the (disjoint) `ranges`, returned in the order of
/// `ranges`.
fn split_into<'a>(buf: &'a mut [f32], ranges: &[Range<usize>]) -> Vec<Option<&'a mut [f32]>> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut out: Vec<Option<&'a mut [f32]>> = (0..ranges.len()).map(|_| None).collect();
    let mut rest = buf;
    let mut at = 0;
    for i in order {
        let r = &ranges[i];
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(r.start - at);
        let (mine, tail) = tail.split_at_mut(r.len());
        out[i] = Some(mine);
        rest = tail;
        at = r.end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_group_parts_from_the_top_down() {
        // PiNet-like: fc2 (small), fc1 (big), the stack.
        let parts = [1_000..1_010, 100..1_000, 0..100];
        let plan = BucketPlan::new(&parts, 1_010, 4 * 500);
        assert_eq!(plan.buckets(), &[100..1_010, 0..100]);
        let plan = BucketPlan::new(&parts, 1_010, 4);
        assert_eq!(plan.buckets(), &[1_000..1_010, 100..1_000, 0..100]);
        let plan = BucketPlan::new(&parts, 1_010, usize::MAX);
        assert_eq!(plan.buckets().to_vec(), vec![(0..1_010)]);
        // Parts that do not tile: one bucket.
        let plan = BucketPlan::new(&[0..10, 10..20], 20, 4);
        assert_eq!(plan.buckets().to_vec(), vec![(0..20)]);
        assert_eq!(plan.bucket_of(15), 0);
    }

    #[test]
    fn split_follows_the_ranges() {
        let mut v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let parts = split_into(&mut v, &[6..10, 2..6, 0..2]);
        let got: Vec<Vec<f32>> = parts.into_iter().map(|p| p.unwrap().to_vec()).collect();
        assert_eq!(got[0], vec![6.0, 7.0, 8.0, 9.0]);
        assert_eq!(got[1], vec![2.0, 3.0, 4.0, 5.0]);
        assert_eq!(got[2], vec![0.0, 1.0]);
    }
}
