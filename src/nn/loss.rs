//! Softmax cross-entropy, numerically stable (log-sum-exp with the maximum
//! subtracted), and the per-batch statistics it reports.

pub use crate::model::BatchStats;
use crate::{Error, Result};

/// Checks that every label is a class index; the error names the index.
pub(crate) fn check_labels(labels: &[u8], classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(Error::invalid(format!(
            "labels[{i}] = {} is out of range for {classes} classes",
            labels[i]
        ))),
        None => Ok(()),
    }
}

/// Softmax cross-entropy of `logits` (`[batch, classes]`, row-major)
/// against `labels` (one class index per sample): the statistics of the
/// batch and, when `dlogits` is given (same length as `logits`), the
/// gradient of the MEAN loss over the batch, `(softmax(z) - onehot(y)) /
/// batch`. The loss is computed stably (log-sum-exp in `f64`). A building
/// block for models written outside the crate (see [`crate::model`]).
///
/// Errors if the lengths disagree or a label is out of range.
///
/// ```
/// use ringsgd::nn::softmax_cross_entropy;
/// let mut d = [0f32; 4];
/// let s = softmax_cross_entropy(&[0.0, 0.0, 3.0, -3.0], &[1, 0], 2, Some(&mut d))?;
/// assert_eq!((s.count, s.correct), (2, 1));
/// assert!((d[0] - 0.25).abs() < 1e-6);
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    dlogits: Option<&mut [f32]>,
) -> Result<BatchStats> {
    if classes == 0 || labels.is_empty() || logits.len() != labels.len() * classes {
        return Err(Error::shape(
            "logits",
            format!(
                "{} logits for {} labels of {classes} classes (need labels x classes, both > 0)",
                logits.len(),
                labels.len()
            ),
        ));
    }
    if let Some(d) = &dlogits {
        if d.len() != logits.len() {
            return Err(Error::shape(
                "dlogits",
                format!("{} values for {} logits", d.len(), logits.len()),
            ));
        }
    }
    check_labels(labels, classes)?;
    Ok(softmax_xent(logits, labels, classes, dlogits))
}

/// Statistics of `logits` (`[B, classes]`) against `labels`; when `dlogits`
/// is given, writes the gradient of the MEAN loss over the batch:
/// `(softmax(z) - onehot(y)) / B`.
pub(crate) fn softmax_xent(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    mut dlogits: Option<&mut [f32]>,
) -> BatchStats {
    let batch = labels.len();
    let mut stats = BatchStats {
        count: batch,
        ..BatchStats::default()
    };
    let inv_b = 1.0 / batch as f32;
    for (i, (z, &y)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        let y = y as usize;
        let (mut arg, mut m) = (0, z[0]);
        for (j, &v) in z.iter().enumerate() {
            if v > m {
                m = v;
                arg = j;
            }
        }
        let sum: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let lse = m as f64 + sum.ln();
        stats.loss_sum += lse - z[y] as f64;
        stats.correct += usize::from(arg == y);
        if let Some(d) = dlogits.as_deref_mut() {
            let d = &mut d[i * classes..(i + 1) * classes];
            for (j, (dj, &v)) in d.iter_mut().zip(z).enumerate() {
                let p = (v as f64 - lse).exp() as f32;
                *dj = (p - if j == y { 1.0 } else { 0.0 }) * inv_b;
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_for_huge_logits() {
        let z = [1000.0f32, 0.0, -1000.0];
        let mut d = [0f32; 3];
        let s = softmax_xent(&z, &[0], 3, Some(&mut d));
        assert!(s.loss_sum.abs() < 1e-6 && s.correct == 1);
        let s = softmax_xent(&z, &[2], 3, Some(&mut d));
        assert!((s.loss_sum - 2000.0).abs() < 1e-3, "{}", s.loss_sum);
        assert!((d[0] - 1.0).abs() < 1e-6 && (d[2] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn uniform_logits_give_log_classes() {
        let s = softmax_xent(&[0.5; 8], &[1, 3], 4, None);
        assert!((s.mean_loss() - 4f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn stats_merge_and_label_check() {
        let mut a = BatchStats {
            loss_sum: 1.0,
            correct: 1,
            count: 2,
        };
        a.merge(&BatchStats {
            loss_sum: 2.0,
            correct: 2,
            count: 2,
        });
        assert_eq!((a.mean_loss(), a.accuracy()), (0.75, 0.75));
        let e = check_labels(&[1, 9, 10], 10).unwrap_err().to_string();
        assert!(e.contains("labels[2]"), "{e}");
    }
}
