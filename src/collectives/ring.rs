//! Ring allreduce (Patarasuk & Yuan 2009): reduce-scatter then allgather,
//! `2 (p - 1)` steps, each rank sending `2 (p - 1) / p * N` values,
//! pipelined in segments across the steps.
//!
//! [`RingAllreduce`] is a state machine over an [`Exchange`]: every
//! receive of the whole allreduce is posted at the start (so data never
//! waits for a receive to be posted), and segment `k` of step `s + 1` is
//! sent as soon as segment `k` of step `s` has arrived and been reduced,
//! not when the whole step is over: the link stays busy across step
//! boundaries. [`advance`](RingAllreduce::advance) does whatever has become
//! possible and returns, so a caller can drive several rings and other work
//! (the compute threads' gradient buckets) from one thread.

use super::reduce::{chunk_range, divide};
use super::wire::Wire;
use crate::comm::exchange::{Exchange, Ticket, MAX_TAG};
use crate::comm::segment_count;
use crate::error::{Error, Result};

/// Element range of segment `k` of chunk `c` (of `p`) of an `n`-element
/// buffer.
fn seg_range(n: usize, p: usize, seg: usize, c: usize, k: usize) -> std::ops::Range<usize> {
    let ch = chunk_range(n, p, c);
    let r = crate::comm::segment_range(ch.len(), seg, k);
    ch.start + r.start..ch.start + r.end
}

/// Number of tags one ring uses (`2 (p - 1)`, one per step).
pub(crate) fn tags_per_ring(p: usize) -> u32 {
    2 * (p.max(1) as u32 - 1)
}

/// Reusable wire buffers of a ring (receive slots and the staging of what
/// it sends), sized by [`RingScratch::words_for`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RingScratch {
    words: Vec<u32>,
}

impl RingScratch {
    /// Bytes of scratch a ring over `n` values needs: the reduce-scatter's
    /// receives, its partial sums in flight, and for 16-bit formats the
    /// encoded own chunk and the allgather's receives. About
    /// `(2 - 2/p) N` wire values (f32) or `(3 - 2/p) N` (16-bit).
    fn bytes_for(n: usize, p: usize, wire: Wire) -> usize {
        let es = wire.bytes_per_value();
        // Every chunk is at most ceil(n / p) values.
        let ch = n.div_ceil(p.max(1));
        let mut units = 2 * (p - 1); // rs receives + rs staging (p - 1 each)
        if wire != Wire::F32 {
            units += 1 + (p - 1); // own encoded chunk + ag receives
        }
        units * ch * es
    }

    fn bytes(&mut self, n: usize, p: usize, wire: Wire) -> &mut [u8] {
        let need = Self::bytes_for(n, p, wire);
        if self.words.len() * 4 < need {
            self.words.resize(need.div_ceil(4), 0);
        }
        &mut bytemuck::cast_slice_mut(&mut self.words[..])[..need]
    }
}

/// Cuts `&'a mut [u8]` pieces off the front of a buffer.
struct Carver<'a> {
    rest: &'a mut [u8],
}

impl<'a> Carver<'a> {
    fn take(&mut self, len: usize) -> &'a mut [u8] {
        let rest = std::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(len);
        self.rest = tail;
        head
    }
}

/// One ring allreduce in flight, in place: `buf` becomes the sum (or mean)
/// over ranks.
///
/// In place without copying the buffer: this rank's own chunk `r` (sent at
/// the first step and overwritten by the first allgather step) is staged;
/// every other chunk is read where it is when its partial sum passes, and
/// its allgather receive is posted only after that (MPI receives posted
/// later than the data are still correct, just not zero-copy; here the
/// data come a whole reduce-scatter later).
pub(crate) struct RingAllreduce<'a> {
    p: usize,
    r: usize,
    wire: Wire,
    mean: bool,
    tag0: u32,
    /// `segs[c][k]`: segment `k` of chunk `c` of the buffer, until it is
    /// handed to a receive or finished.
    segs: Vec<Vec<Option<&'a mut [f32]>>>,
    /// Receive buffers of the reduce-scatter steps, per step and segment,
    /// until posted.
    rs_slots: Vec<Vec<Option<&'a mut [u8]>>>,
    /// 16-bit formats: receive buffers of the allgather steps.
    ag_slots: Vec<Vec<Option<&'a mut [u8]>>>,
    /// Staging of the reduce-scatter sends of step `s` (per segment).
    rs_stage: Vec<Vec<Option<&'a mut [u8]>>>,
    /// 16-bit formats: the encoded final sum of this rank's chunk.
    own_stage: Vec<Option<&'a mut [u8]>>,
    /// Receive tickets (`None`: not posted yet) and the next segment to
    /// complete, per step.
    rs: Vec<Vec<Option<Ticket>>>,
    rs_next: Vec<usize>,
    ag: Vec<Vec<Option<Ticket>>>,
    ag_next: Vec<usize>,
    sends: Vec<Ticket>,
    sends_done: usize,
    started: bool,
    bytes_sent: usize,
}

impl<'a> RingAllreduce<'a> {
    /// A ring of `p` ranks (this one `r`) over `buf`, with `seg`-value
    /// segments (`0`: one per chunk), tags `tag0 .. tag0 +
    /// tags_per_ring(p)`. `p >= 2`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        p: usize,
        r: usize,
        buf: &'a mut [f32],
        scratch: &'a mut RingScratch,
        seg: usize,
        wire: Wire,
        mean: bool,
        tag0: u32,
    ) -> Result<Self> {
        if p < 2 || r >= p {
            return Err(Error::invalid(format!(
                "ring allreduce: rank {r} of {p} ranks"
            )));
        }
        if tag0 as u64 + tags_per_ring(p) as u64 > MAX_TAG as u64 + 1 {
            return Err(Error::invalid(format!(
                "ring allreduce: tags from {tag0} for {p} ranks exceed {MAX_TAG}"
            )));
        }
        let n = buf.len();
        let es = wire.bytes_per_value();
        let nsegs = |c: usize| segment_count(chunk_range(n, p, c).len(), seg);
        let seg_len = |c: usize, k: usize| seg_range(n, p, seg, c, k).len();
        let n_sends: usize = (0..p).map(nsegs).sum::<usize>() * 2;
        // The buffer, cut into segments.
        let mut segs = Vec::with_capacity(p);
        let mut rest = buf;
        for c in 0..p {
            let (chunk, tail) = rest.split_at_mut(chunk_range(n, p, c).len());
            rest = tail;
            let mut v = Vec::with_capacity(nsegs(c));
            let mut crest = chunk;
            for k in 0..nsegs(c) {
                let (s, t) = crest.split_at_mut(seg_len(c, k));
                crest = t;
                v.push(Some(s));
            }
            segs.push(v);
        }
        let mut carve = Carver {
            rest: scratch.bytes(n, p, wire),
        };
        let mut slots = |c: usize, keep: bool| -> Vec<Option<&'a mut [u8]>> {
            (0..nsegs(c))
                .map(|k| keep.then(|| carve.take(seg_len(c, k) * es)))
                .collect()
        };
        let rs_slots = (0..p - 1)
            .map(|s| slots(rs_recv_chunk(p, r, s), true))
            .collect();
        let rs_stage = (0..p - 1)
            .map(|s| slots(rs_send_chunk(p, r, s), true))
            .collect();
        let half = wire != Wire::F32;
        let own_stage = slots(owned_chunk(p, r), half);
        let ag_slots = (0..p - 1)
            .map(|s| slots(ag_recv_chunk(p, r, s), half))
            .collect();
        Ok(RingAllreduce {
            p,
            r,
            wire,
            mean,
            tag0,
            segs,
            rs_slots,
            ag_slots,
            rs_stage,
            own_stage,
            rs: Vec::with_capacity(p - 1),
            rs_next: vec![0; p - 1],
            ag: Vec::with_capacity(p - 1),
            ag_next: vec![0; p - 1],
            sends: Vec::with_capacity(n_sends),
            sends_done: 0,
            started: false,
            bytes_sent: 0,
        })
    }

    fn right(&self) -> usize {
        (self.r + 1) % self.p
    }

    fn left(&self) -> usize {
        (self.r + self.p - 1) % self.p
    }

    fn rs_tag(&self, s: usize) -> u32 {
        self.tag0 + s as u32
    }

    fn ag_tag(&self, s: usize) -> u32 {
        self.tag0 + (self.p - 1 + s) as u32
    }

    /// Posts allgather step `s`'s receive of segment `k` (into the buffer
    /// for f32, a wire slot otherwise).
    fn post_ag_recv(&mut self, x: &mut dyn Exchange<'a>, s: usize, k: usize) -> Result<()> {
        let c = ag_recv_chunk(self.p, self.r, s);
        let buf: &'a mut [u8] = if self.wire == Wire::F32 {
            let seg = self.segs[c][k]
                .take()
                .expect("segment not yet received into");
            bytemuck::cast_slice_mut(seg)
        } else {
            self.ag_slots[s][k]
                .take()
                .expect("receive slots are posted once")
        };
        let t = x.recv(self.left(), self.ag_tag(s), buf)?;
        self.ag[s][k] = Some(t);
        Ok(())
    }

    /// Posts the reduce-scatter receives, the allgather receives that can
    /// be posted now, and the first step's sends.
    pub(crate) fn start(&mut self, x: &mut dyn Exchange<'a>) -> Result<()> {
        let (p, r, left) = (self.p, self.r, self.left());
        for s in 0..p - 1 {
            let tag = self.rs_tag(s);
            let mut v = Vec::with_capacity(self.rs_slots[s].len());
            for slot in self.rs_slots[s].iter_mut() {
                let buf = slot.take().expect("receive slots are posted once");
                v.push(Some(x.recv(left, tag, buf)?));
            }
            self.rs.push(v);
        }
        for s in 0..p - 1 {
            let c = ag_recv_chunk(p, r, s);
            self.ag.push(vec![None; self.segs[c].len()]);
        }
        // Step 0: this rank's own chunk r, staged (the first allgather
        // step overwrites it); then that receive can be posted.
        let c = rs_send_chunk(p, r, 0);
        for k in 0..self.rs_stage[0].len() {
            let stage = self.rs_stage[0][k].take().expect("staging used once");
            let own = self.segs[c][k].as_deref().expect("own chunk untouched");
            self.wire.encode(own, stage);
            self.post_send(x, self.rs_tag(0), stage)?;
        }
        for s in 0..p - 1 {
            // 16-bit: every allgather receive goes to a wire slot.
            let ready = self.wire != Wire::F32 || s == 0;
            if ready {
                for k in 0..self.ag[s].len() {
                    self.post_ag_recv(x, s, k)?;
                }
            }
        }
        self.started = true;
        Ok(())
    }

    fn post_send(&mut self, x: &mut dyn Exchange<'a>, tag: u32, data: &'a [u8]) -> Result<()> {
        self.bytes_sent += data.len();
        let t = x.send(self.right(), tag, data)?;
        self.sends.push(t);
        Ok(())
    }

    /// Does everything that has become possible: reduces the segments that
    /// arrived and sends what they enable. True if anything happened.
    pub(crate) fn advance(&mut self, x: &mut dyn Exchange<'a>) -> Result<bool> {
        if !self.started {
            return Err(Error::invalid("ring allreduce advanced before it started"));
        }
        let mut any = false;
        let p = self.p;
        for s in 0..p - 1 {
            while self.rs_next[s] < self.rs[s].len() {
                let k = self.rs_next[s];
                let t = self.rs[s][k].expect("reduce-scatter receives are posted at start");
                let Some(incoming) = x.test(t)? else {
                    break;
                };
                self.reduced(x, s, k, incoming)?;
                self.rs_next[s] += 1;
                any = true;
            }
        }
        for s in 0..p - 1 {
            while self.ag_next[s] < self.ag[s].len() {
                let k = self.ag_next[s];
                let Some(t) = self.ag[s][k] else {
                    break;
                };
                let Some(incoming) = x.test(t)? else {
                    break;
                };
                self.gathered(x, s, k, incoming)?;
                self.ag_next[s] += 1;
                any = true;
            }
        }
        while self.sends_done < self.sends.len() {
            if x.test(self.sends[self.sends_done])?.is_none() {
                break;
            }
            self.sends_done += 1;
            any = true;
        }
        Ok(any)
    }

    /// Segment `k` of reduce-scatter step `s` arrived: add this rank's
    /// values and pass the partial sum on (or, at the last step, finish the
    /// chunk in place and start its allgather).
    fn reduced(
        &mut self,
        x: &mut dyn Exchange<'a>,
        s: usize,
        k: usize,
        incoming: &'a [u8],
    ) -> Result<()> {
        let (p, r) = (self.p, self.r);
        let c = rs_recv_chunk(p, r, s);
        if s + 1 < p - 1 {
            let stage = self.rs_stage[s + 1][k].take().expect("staging used once");
            let own = self.segs[c][k]
                .as_deref()
                .expect("segment still holds its input");
            self.wire.add_encode(own, incoming, stage);
            self.post_send(x, self.rs_tag(s + 1), stage)?;
            if self.wire == Wire::F32 {
                // This segment's input has been read: its final value may
                // now arrive (allgather step s + 1 receives chunk c).
                self.post_ag_recv(x, s + 1, k)?;
            }
            return Ok(());
        }
        // Last step: chunk c = r + 1 is complete here.
        let out = self.segs[c][k].take().expect("owned segment unused");
        self.wire.add_in_place(out, incoming);
        if self.mean {
            divide(out, p);
        }
        let data: &'a [u8] = match self.own_stage.get_mut(k).and_then(Option::take) {
            None => bytemuck::cast_slice(&*out),
            Some(stage) => {
                self.wire.encode(out, stage);
                // Keep what the others will receive: replicas identical.
                self.wire.decode(stage, out);
                stage
            }
        };
        self.post_send(x, self.ag_tag(0), data)
    }

    /// Segment `k` of allgather step `s` arrived: keep it and pass it on.
    fn gathered(
        &mut self,
        x: &mut dyn Exchange<'a>,
        s: usize,
        k: usize,
        incoming: &'a [u8],
    ) -> Result<()> {
        if self.wire != Wire::F32 {
            let c = ag_recv_chunk(self.p, self.r, s);
            let out = self.segs[c][k].take().expect("segment not yet written");
            self.wire.decode(incoming, out);
        }
        if s + 1 < self.p - 1 {
            self.post_send(x, self.ag_tag(s + 1), incoming)?;
        }
        Ok(())
    }

    /// Whether every receive and send of this ring has completed.
    pub(crate) fn is_done(&self) -> bool {
        self.started
            && self.sends_done == self.sends.len()
            && self
                .rs_next
                .iter()
                .zip(&self.rs)
                .all(|(n, v)| *n == v.len())
            && self
                .ag_next
                .iter()
                .zip(&self.ag)
                .all(|(n, v)| *n == v.len())
    }

    /// Bytes this rank has put on the wire so far.
    pub(crate) fn bytes_sent(&self) -> usize {
        self.bytes_sent
    }
}

/// Chunk rank `r` sends at reduce-scatter step `s`.
fn rs_send_chunk(p: usize, r: usize, s: usize) -> usize {
    (r + p - s) % p
}

/// Chunk rank `r` receives (and adds to) at reduce-scatter step `s`. Chunk
/// `c` starts at rank `c` and picks up one rank's values per hop, so its sum
/// is always formed as `((x_c + x_{c+1}) + x_{c+2}) + ...`, whatever the
/// timing.
fn rs_recv_chunk(p: usize, r: usize, s: usize) -> usize {
    (r + 2 * p - s - 1) % p
}

/// Chunk whose full sum rank `r` forms (at the last reduce-scatter step).
fn owned_chunk(p: usize, r: usize) -> usize {
    (r + 1) % p
}

/// Chunk rank `r` receives at allgather step `s`.
fn ag_recv_chunk(p: usize, r: usize, s: usize) -> usize {
    (r + p - s) % p
}

/// Sums (or averages, with `mean`) `buf` over all ranks in place, driving
/// one [`RingAllreduce`] to completion through `comm.exchange`; returns the
/// bytes this rank sent.
pub(crate) fn ring_allreduce(
    comm: &dyn crate::comm::Transport,
    buf: &mut [f32],
    scratch: &mut RingScratch,
    seg: usize,
    wire: Wire,
    mean: bool,
) -> Result<usize> {
    let p = comm.size();
    if p == 1 {
        return Ok(0);
    }
    crate::comm::exchange::run(comm, |x| {
        let mut ring = RingAllreduce::new(p, comm.rank(), buf, scratch, seg, wire, mean, 0)?;
        ring.start(x)?;
        while !ring.is_done() {
            if !ring.advance(x)? {
                x.wait_any(true, &mut || false)?;
            }
        }
        Ok(ring.bytes_sent())
    })
}
