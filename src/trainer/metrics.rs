//! Per-epoch reports and their CSV file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::trainer::timing::StepTimes;

/// Loss and accuracy over a set of images, summed over all ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalReport {
    /// Mean cross-entropy loss per image.
    pub loss: f64,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Number of images evaluated.
    pub images: usize,
}

/// What one epoch (or the part of it that ran) did, identical on all ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: u64,
    /// Global optimiser steps done at the end of this epoch.
    pub step: u64,
    /// Optimiser steps run in this epoch by this call.
    pub steps: u64,
    /// Mean training loss over the epoch's images (before each update).
    pub train_loss: f64,
    /// Training accuracy over the epoch's images (before each update).
    pub train_accuracy: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Training images processed per second, all ranks together.
    pub images_per_sec: f64,
    /// Wall-clock seconds of the epoch's training steps (rank 0's clock).
    pub seconds: f64,
    /// Sum over the epoch's steps of the split over all ranks (see
    /// [`critical_path`](crate::trainer::critical_path)).
    pub times: StepTimes,
    /// Test-set evaluation after the epoch, if one ran.
    pub test: Option<EvalReport>,
}

/// Writes one CSV row per epoch, creating the file with its header.
///
/// Columns: `epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,lr,
/// images_per_sec,epoch_seconds,compute_seconds,wait_seconds,allreduce_seconds`
/// (test columns empty when the epoch was not evaluated). The file is
/// flushed after every row so a killed run keeps its curve.
///
/// ```
/// # use ringsgd::trainer::{EpochReport, MetricsCsv};
/// # fn main() -> ringsgd::Result<()> {
/// let path = std::env::temp_dir().join("ringsgd_doc_metrics.csv");
/// let mut csv = MetricsCsv::create(&path, false)?;
/// csv.write(&EpochReport { epoch: 1, ..Default::default() })?;
/// assert!(std::fs::read_to_string(&path).unwrap().starts_with("epoch,"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    out: BufWriter<File>,
}

/// The CSV header of [`MetricsCsv`].
pub const METRICS_HEADER: &str = "epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,\
lr,images_per_sec,epoch_seconds,compute_seconds,wait_seconds,allreduce_seconds";

impl MetricsCsv {
    /// Creates (or truncates) `path` and writes the header. With `append`,
    /// an existing file is kept and rows are added to it (for resumed runs).
    pub fn create(path: &Path, append: bool) -> Result<Self> {
        let exists = append && path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut csv = MetricsCsv {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        };
        if !exists {
            csv.line(METRICS_HEADER)?;
        }
        Ok(csv)
    }

    /// Appends one epoch's row.
    pub fn write(&mut self, r: &EpochReport) -> Result<()> {
        let (tl, ta) = match r.test {
            Some(t) => (format!("{:.6}", t.loss), format!("{:.6}", t.accuracy)),
            None => (String::new(), String::new()),
        };
        let row = format!(
            "{},{},{:.6},{:.6},{},{},{:.6e},{:.3},{:.4},{:.4},{:.4},{:.4}",
            r.epoch,
            r.step,
            r.train_loss,
            r.train_accuracy,
            tl,
            ta,
            r.lr,
            r.images_per_sec,
            r.seconds,
            r.times.compute,
            r.times.wait,
            r.times.allreduce
        );
        self.line(&row)
    }

    fn line(&mut self, s: &str) -> Result<()> {
        writeln!(self.out, "{s}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_as_many_fields_as_header() {
        let dir = std::env::temp_dir().join(format!("ringsgd_metrics_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.csv");
        let mut csv = MetricsCsv::create(&path, false).unwrap();
        csv.write(&EpochReport {
            epoch: 1,
            test: Some(EvalReport {
                loss: 1.0,
                accuracy: 0.5,
                images: 10,
            }),
            ..Default::default()
        })
        .unwrap();
        drop(csv);
        let mut csv = MetricsCsv::create(&path, true).unwrap();
        csv.write(&EpochReport {
            epoch: 2,
            ..Default::default()
        })
        .unwrap();
        drop(csv);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let n = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == n));
        assert!(lines[1].contains("0.500000"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let err = MetricsCsv::create(Path::new("/nonexistent-dir/m.csv"), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/m.csv"));
    }
}
