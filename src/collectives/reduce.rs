//! Element-wise kernels of the reductions. Plain loops that the compiler
//! vectorises; kept separate so every algorithm sums the same way.

/// `acc[i] += x[i]` (the local value first, the incoming one second: `+` on
/// `f32` is commutative, so only the grouping, fixed by the algorithm,
/// affects the result).
pub(crate) fn add_assign(acc: &mut [f32], x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (a, b) in acc.iter_mut().zip(x) {
        *a += *b;
    }
}

/// `buf[i] /= ranks`: turns a sum into a mean. A division (correctly
/// rounded), not a multiplication by a rounded `1 / ranks`.
pub(crate) fn divide(buf: &mut [f32], ranks: usize) {
    if ranks == 1 {
        return;
    }
    let d = ranks as f32;
    for v in buf {
        *v /= d;
    }
}

/// Balanced partition of `len` elements into `parts` chunks: the first
/// `len % parts` chunks hold one element more. Returns chunk `c`'s range.
pub(crate) fn chunk_range(len: usize, parts: usize, c: usize) -> std::ops::Range<usize> {
    let base = len / parts;
    let rem = len % parts;
    let start = c * base + c.min(rem);
    start..start + base + usize::from(c < rem)
}

/// Borrows two disjoint ranges of `buf`: `send` shared, `recv` mutable.
pub(crate) fn split_send_recv<T>(
    buf: &mut [T],
    send: std::ops::Range<usize>,
    recv: std::ops::Range<usize>,
) -> (&[T], &mut [T]) {
    if send.end <= recv.start {
        let (lo, hi) = buf.split_at_mut(recv.start);
        (&lo[send], &mut hi[..recv.len()])
    } else {
        assert!(
            recv.end <= send.start,
            "overlapping ranges {send:?} and {recv:?}"
        );
        let (lo, hi) = buf.split_at_mut(send.start);
        (&hi[..send.len()], &mut lo[recv])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_partition_any_length() {
        for len in 0..30 {
            for parts in 1..9 {
                let mut next = 0;
                for c in 0..parts {
                    let r = chunk_range(len, parts, c);
                    assert_eq!(r.start, next);
                    assert!(r.len() == len / parts || r.len() == len / parts + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn split_handles_empty_and_adjacent_ranges() {
        let mut v = [0, 1, 2, 3, 4];
        let (s, r) = split_send_recv(&mut v, 0..2, 2..4);
        assert_eq!(s, &[0, 1]);
        r[0] = 9;
        let (s, r) = split_send_recv(&mut v, 3..5, 0..2);
        assert_eq!(s, &[3, 4]);
        assert_eq!(r, &[0, 1]);
        let (s, r) = split_send_recv(&mut v, 2..2, 2..3);
        assert!(s.is_empty());
        assert_eq!(r, &[9]);
        let (s, r) = split_send_recv(&mut v, 2..3, 2..2);
        assert_eq!(s, &[9]);
        assert!(r.is_empty());
        let (s, r) = split_send_recv(&mut v, 5..5, 4..5);
        assert!(s.is_empty());
        assert_eq!(r, &[4]);
    }

    #[test]
    fn divide_by_rank_count() {
        let mut b = [6.0f32, 3.0, 0.0];
        divide(&mut b, 3);
        assert_eq!(b, [2.0, 1.0, 0.0]);
        divide(&mut b, 1);
        assert_eq!(b, [2.0, 1.0, 0.0]);
    }
}
