//! Fail-fast agreement checks: do all ranks hold the same bytes?

use super::allgather::{allgather_bytes, allgather_fixed};
use crate::comm::Transport;
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
/// use ringsgd::comm::{local, Transport};
/// use ringsgd::Error;
///
/// let res = local::run_ranks(3, |comm| {
///     let config = if comm.rank() == 1 { "lr=0.2" } else { "lr=0.1" };
///     Ok(ensure_agree(&comm, "config", config.as_bytes()).unwrap_err().to_string())
/// })?;
/// assert!(res.iter().all(|e| e.contains("config differs") && e.contains("rank 1 holds")));
/// # Ok::<(), Error>(())
/// ```
pub fn ensure_agree(comm: &dyn Transport, what: &str, bytes: &[u8]) -> Result<()> {
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

/// Checks that every rank holds the same `(key, value)` settings, and on
/// disagreement names the keys that differ and what each rank holds.
///
/// `entries` is one rank's settings, e.g. a command line as `("--lr",
/// Some("0.1"))`, with `None` for a setting that was not given. The ranks
/// first compare digests as [`ensure_agree`] does (one small message per
/// rank); only when they differ do they exchange the entries themselves, so
/// that every rank returns the same [`Error::RankMismatch`], of the form
/// `what differs across ranks: --checkpoint: unset on rank 0, "x" on rank 1`.
/// A key that some ranks do not have at all (another build) is reported as
/// `missing` on those ranks. Values are shown quoted, cut after 200
/// characters.
///
/// ```
/// use ringsgd::collectives::ensure_agree_keyed;
/// use ringsgd::comm::{local, Transport};
///
/// let errs = local::run_ranks(3, |comm| {
///     let ckpt = (comm.rank() == 1).then(|| "run.ckpt".to_string());
///     let entries = vec![
///         ("--lr".to_string(), Some("0.1".to_string())),
///         ("--checkpoint".to_string(), ckpt),
///     ];
///     Ok(ensure_agree_keyed(&comm, "settings", &entries).unwrap_err().to_string())
/// })?;
/// assert!(errs.iter().all(|e| e == &errs[0]));
/// assert!(errs[0].contains(r#"--checkpoint: unset on ranks 0, 2, "run.ckpt" on rank 1"#), "{}", errs[0]);
/// assert!(!errs[0].contains("--lr"));
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn ensure_agree_keyed(
    comm: &dyn Transport,
    what: &str,
    entries: &[(String, Option<String>)],
) -> Result<()> {
    let mine = encode_entries(entries);
    match ensure_agree(comm, what, &mine) {
        // Every rank computed this from the same gathered digests, so every
        // rank takes the same branch and the gather below is collective.
        Err(Error::RankMismatch(digests)) => {
            let all = allgather_bytes(comm, &mine)?;
            let decoded: Vec<Vec<(String, Option<String>)>> = all
                .iter()
                .map(|b| decode_entries(b))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::RankMismatch(format!("{digests} (undecodable entries)")))?;
            Err(Error::RankMismatch(describe_keyed(what, &decoded)))
        }
        other => other,
    }
}

/// `count`, then per entry: key length, key, presence byte, value length,
/// value (lengths u32 LE).
fn encode_entries(entries: &[(String, Option<String>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.push(u8::from(v.is_some()));
        let v = v.as_deref().unwrap_or("");
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn decode_entries(mut b: &[u8]) -> Option<Vec<(String, Option<String>)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn u32_of(b: &mut &[u8]) -> Option<usize> {
        let w: [u8; 4] = take(b, 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(w) as usize)
    }
    fn string(b: &mut &[u8]) -> Option<String> {
        let n = u32_of(b)?;
        String::from_utf8(take(b, n)?.to_vec()).ok()
    }
    let n = u32_of(&mut b)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let k = string(&mut b)?;
        let present = take(&mut b, 1)?[0] == 1;
        let v = string(&mut b)?;
        out.push((k, present.then_some(v)));
    }
    b.is_empty().then_some(out)
}

fn rank_list(ranks: &[usize]) -> String {
    let list: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    let s = if ranks.len() == 1 { "" } else { "s" };
    format!("rank{s} {}", list.join(", "))
}

/// The message of [`ensure_agree_keyed`]: per differing key (in order of
/// first appearance), the ranks grouped by value.
fn describe_keyed(what: &str, per_rank: &[Vec<(String, Option<String>)>]) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for entries in per_rank {
        for (k, _) in entries {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let mut parts = Vec::new();
    for key in keys {
        // None: the rank has no such key; Some(None): unset.
        let mut groups: Vec<(Option<Option<&str>>, Vec<usize>)> = Vec::new();
        for (rank, entries) in per_rank.iter().enumerate() {
            let v = entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_deref());
            match groups.iter_mut().find(|(g, _)| *g == v) {
                Some((_, ranks)) => ranks.push(rank),
                None => groups.push((v, vec![rank])),
            }
        }
        if groups.len() < 2 {
            continue;
        }
        let shown: Vec<String> = groups
            .iter()
            .map(|(v, ranks)| {
                let v = match v {
                    None => "missing".to_string(),
                    Some(None) => "unset".to_string(),
                    Some(Some(s)) if s.chars().count() > 200 => {
                        format!("{:?}...", s.chars().take(200).collect::<String>())
                    }
                    Some(Some(s)) => format!("{s:?}"),
                };
                format!("{v} on {}", rank_list(ranks))
            })
            .collect();
        parts.push(format!("{key}: {}", shown.join(", ")));
    }
    if parts.is_empty() {
        // Same keys and values but another order or duplicates.
        return format!("{what} differs across ranks in the order of its entries");
    }
    format!("{what} differs across ranks: {}", parts.join("; "))
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
    fn keyed_disagreement_names_the_keys_on_every_rank() {
        let entries = |rank: usize| -> Vec<(String, Option<String>)> {
            let mut e = vec![
                ("--lr".to_string(), Some("0.1".to_string())),
                (
                    "--seed".to_string(),
                    Some(if rank == 2 { "8" } else { "7" }.to_string()),
                ),
                ("--checkpoint".to_string(), None),
            ];
            if rank == 3 {
                e[2].1 = Some("a b.ckpt".into());
                e.push(("--new-flag".to_string(), Some("1".to_string())));
            }
            e
        };
        run_ranks(4, |comm| {
            let same = entries(0);
            ensure_agree_keyed(&comm, "settings", &same)
        })
        .unwrap();
        let errs = run_ranks(4, |comm| {
            Ok(ensure_agree_keyed(&comm, "settings", &entries(comm.rank()))
                .unwrap_err()
                .to_string())
        })
        .unwrap();
        assert!(errs.iter().all(|e| e == &errs[0]), "{errs:?}");
        let e = &errs[0];
        assert_eq!(
            e,
            "ranks disagree: settings differs across ranks: \
             --seed: \"7\" on ranks 0, 1, 3, \"8\" on rank 2; \
             --checkpoint: unset on ranks 0, 1, 2, \"a b.ckpt\" on rank 3; \
             --new-flag: missing on ranks 0, 1, 2, \"1\" on rank 3"
        );
    }

    #[test]
    fn entries_round_trip() {
        let e = vec![
            ("k".to_string(), Some(String::new())),
            ("".to_string(), None),
            ("ü".to_string(), Some("v=1".to_string())),
        ];
        assert_eq!(decode_entries(&encode_entries(&e)), Some(e.clone()));
        let mut b = encode_entries(&e);
        b.push(0);
        assert_eq!(decode_entries(&b), None);
        assert_eq!(decode_entries(&b[..5]), None);
    }

    #[test]
    fn single_rank_always_agrees() {
        run_ranks(1, |comm| ensure_agree(&comm, "anything", b"v")).unwrap();
    }
}
