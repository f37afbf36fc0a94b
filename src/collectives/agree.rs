//! Fail-fast agreement checks: do all ranks hold the same bytes?

use super::allgather::allgather_fixed;
use crate::comm::Communicator;
use crate::error::{Error, Result};

/// Size of the per-rank digest exchanged by [`ensure_agree`].
const DIGEST_BYTES: usize = 24;

/// Checks that every rank holds identical `bytes` (a configuration, a model
/// hash, a data-set fingerprint). On disagreement every rank returns the
/// same [`Error::RankMismatch`], which names `what` and groups the ranks by
/// the value they hold.
///
/// The ranks exchange a fixed-size digest (length plus two independent
/// 64-bit hashes), so `bytes` may differ in length across ranks and may be
/// large; only the digests travel. The hashes are not cryptographic: the
/// check guards against mistakes, not against an adversary.
///
/// ```
/// use ringsgd::collectives::ensure_agree;
/// use ringsgd::comm::{local, Communicator};
/// use ringsgd::Error;
///
/// let res = local::run_ranks(3, |comm| {
///     let config = if comm.rank() == 1 { "lr=0.2" } else { "lr=0.1" };
///     Ok(ensure_agree(&comm, "config", config.as_bytes()).unwrap_err().to_string())
/// })?;
/// assert!(res.iter().all(|e| e.contains("config differs") && e.contains("rank 1 holds")));
/// # Ok::<(), Error>(())
/// ```
pub fn ensure_agree(comm: &dyn Communicator, what: &str, bytes: &[u8]) -> Result<()> {
    let p = comm.size();
    let mine = digest(bytes);
    let mut all = vec![0u8; p * DIGEST_BYTES];
    allgather_fixed(comm, &mine, &mut all)?;
    let digests: Vec<&[u8]> = all.chunks_exact(DIGEST_BYTES).collect();
    if digests.iter().all(|d| *d == digests[0]) {
        return Ok(());
    }
    // Group ranks by digest, in order of first appearance.
    let mut groups: Vec<(&[u8], Vec<usize>)> = Vec::new();
    for (rank, d) in digests.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| g == d) {
            Some((_, ranks)) => ranks.push(rank),
            None => groups.push((d, vec![rank])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, (d, ranks))| {
            let who = if ranks.len() == 1 {
                format!("rank {}", ranks[0])
            } else {
                let list: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
                format!("ranks {}", list.join(", "))
            };
            let verb = if ranks.len() == 1 { "holds" } else { "hold" };
            let mut len = [0u8; 8];
            len.copy_from_slice(&d[..8]);
            format!(
                "{who} {verb} value #{} ({} bytes, digest {})",
                i + 1,
                u64::from_le_bytes(len),
                hex(&d[8..])
            )
        })
        .collect();
    Err(Error::RankMismatch(format!(
        "{what} differs across ranks: {}",
        parts.join("; ")
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Length (8 bytes LE), FNV-1a 64 (8 bytes), and a multiply-rotate word hash
/// with a 64-bit finaliser (8 bytes). Portable and deterministic.
fn digest(bytes: &[u8]) -> [u8; DIGEST_BYTES] {
    let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        fnv ^= u64::from(b);
        fnv = fnv.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31);
    }
    h ^= bytes.len() as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let mut out = [0u8; DIGEST_BYTES];
    out[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    out[8..16].copy_from_slice(&fnv.to_le_bytes());
    out[16..].copy_from_slice(&h.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::local::run_ranks;

    #[test]
    fn digest_is_stable_and_sensitive() {
        // Pinned values: the digest must not change across platforms or
        // versions, or mixed clusters would report false disagreements.
        // (Reference values computed independently, in Python.)
        assert_eq!(
            hex(&digest(b"")),
            "000000000000000025232284e49cf2cb134234b198bbcd7a"
        );
        assert_eq!(
            hex(&digest(b"The quick brown fox")),
            "13000000000000008297449b6b3174234eff6f24f414c803"
        );
        assert_ne!(digest(b"abc"), digest(b"abd"));
        assert_ne!(digest(b"abc"), digest(b"abc\0"));
        assert_ne!(digest(&[0u8; 8]), digest(&[0u8; 9]));
    }

    #[test]
    fn agreement_passes_and_disagreement_names_groups_on_every_rank() {
        run_ranks(4, |comm| ensure_agree(&comm, "config", b"same")).unwrap();
        let errs = run_ranks(4, |comm| {
            let v: &[u8] = match comm.rank() {
                1 => b"longer value",
                3 => b"x",
                _ => b"same",
            };
            Ok(ensure_agree(&comm, "model", v).unwrap_err().to_string())
        })
        .unwrap();
        for e in &errs {
            assert_eq!(e, &errs[0]);
        }
        let e = &errs[0];
        assert!(e.contains("model differs across ranks"), "{e}");
        assert!(e.contains("ranks 0, 2 hold value #1 (4 bytes"), "{e}");
        assert!(e.contains("rank 1 holds value #2 (12 bytes"), "{e}");
        assert!(e.contains("rank 3 holds value #3 (1 bytes"), "{e}");
    }

    #[test]
    fn single_rank_always_agrees() {
        run_ranks(1, |comm| ensure_agree(&comm, "anything", b"v")).unwrap();
    }
}
