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
    fn divide_by_rank_count() {
        let mut b = [6.0f32, 3.0, 0.0];
        divide(&mut b, 3);
        assert_eq!(b, [2.0, 1.0, 0.0]);
        divide(&mut b, 1);
        assert_eq!(b, [2.0, 1.0, 0.0]);
    }
}
