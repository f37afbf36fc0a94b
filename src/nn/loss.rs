//! Softmax cross-entropy, numerically stable (log-sum-exp with the maximum
//! subtracted), and the per-batch statistics it reports.

use crate::{Error, Result};

/// Loss and accuracy of one batch (or of several, merged).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Sum over images of the per-image cross-entropy loss.
    pub loss_sum: f64,
    /// Images whose largest logit is the label (first maximum on ties).
    pub correct: usize,
    /// Images counted.
    pub count: usize,
}

impl BatchStats {
    /// Mean loss per image (0 for an empty count).
    pub fn mean_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }

    /// Fraction of images classified correctly (0 for an empty count).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }

    /// Adds another batch's statistics to these.
    pub fn merge(&mut self, other: &BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
    }
}

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
