//! Per-epoch reports and their CSV file.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::health::NodeHealth;
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
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// The rank that computed longest in the epoch (with more than one
    /// rank): the one the others waited for.
    pub slowest: Option<Straggler>,
    /// Every rank's epoch: host, compute, wait, temperature and clock.
    pub ranks: Vec<RankReport>,
    /// Every rank's share of the global batch in the epoch's last step
    /// (equal unless `TrainConfig::balance` moved them).
    pub shares: Vec<usize>,
    /// Gradient bytes rank 0 put on the wire in the epoch (ring only; 0
    /// otherwise). Over the communication time (`times.allreduce +
    /// times.hidden`) this is the allreduce's bus bandwidth.
    pub wire_bytes: u64,
    /// Seconds of the test-set evaluation after the epoch, if one ran (set
    /// by the caller that runs it).
    pub eval_seconds: Option<f64>,
    /// Seconds of writing the checkpoint after the epoch, if one was
    /// written (set by the caller that writes it).
    pub checkpoint_seconds: Option<f64>,
}

impl EpochReport {
    /// The ring's achieved bus bandwidth in bytes per second over the
    /// epoch: what each rank sent per second of gradient communication
    /// (`None` without ring traffic).
    pub fn bus_bandwidth(&self) -> Option<f64> {
        let t = self.times.allreduce + self.times.hidden;
        (self.wire_bytes > 0 && t > 0.0).then(|| self.wire_bytes as f64 / t)
    }
}

/// The slowest rank of an epoch and by how much.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Straggler {
    /// Its rank (the communicator's `host_name` says where it runs).
    pub rank: usize,
    /// Its compute seconds over the epoch's steps.
    pub compute: f64,
    /// The mean over ranks of the same.
    pub mean_compute: f64,
}

/// One rank's share of an epoch, as every rank sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RankReport {
    /// The rank.
    pub rank: usize,
    /// The host it runs on.
    pub host: String,
    /// Its compute seconds over the epoch's steps.
    pub compute: f64,
    /// Its seconds of the epoch's steps not spent computing: waiting for
    /// the other ranks and for the gradient's exchange (with overlap, the
    /// part of the exchange that was not hidden behind backward).
    pub wait: f64,
    /// Its node's temperature and clock over the epoch (what the machine
    /// exposes; see [`crate::health`]).
    pub health: NodeHealth,
}

impl RankReport {
    /// The warning for a rank that ran below its maximum clock or that the
    /// firmware reports throttled (`None` otherwise).
    pub fn throttle_warning(&self) -> Option<String> {
        let h = &self.health;
        if !h.throttled() {
            return None;
        }
        let mut why = Vec::new();
        if let (Some(c), Some(m)) = (h.mhz_mean, h.max_mhz) {
            why.push(format!(
                "ran at {c:.0} MHz on average (lowest {:.0}) of its maximum {m:.0} MHz",
                h.mhz_min.unwrap_or(c)
            ));
        }
        if let Some(t) = h.temp_max_c {
            why.push(format!("up to {t:.1} °C"));
        }
        let flags = h.flag_words();
        if !flags.is_empty() {
            why.push(format!("firmware: {}", flags.join(", ")));
        }
        Some(format!(
            "rank {} ({}) is throttled: {}; every step waits for it (check its cooling and \
             power supply)",
            self.rank,
            self.host,
            why.join("; ")
        ))
    }
}

/// Writes one CSV row per epoch, with a header line.
///
/// Columns: `epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,lr,
/// images_per_sec,epoch_seconds,compute_seconds,wait_seconds,allreduce_seconds,
/// eval_seconds,checkpoint_seconds` (test and eval columns empty when the
/// epoch was not evaluated, checkpoint_seconds when no checkpoint was
/// written). `epoch_seconds` covers the training steps only. A resumed CSV
/// written before the last two columns existed gets the new header; its
/// old rows keep their 12 fields.
///
/// The file is rewritten atomically after every row (the whole text, with
/// [`write_atomic`](crate::output::write_atomic); a CSV holds one short
/// line per epoch), so a killed run keeps its curve and a full disk leaves
/// the previous version intact. [`create`](Self::create) only checks the
/// path (a regular file or absent, in a folder that accepts files) and
/// changes nothing on disk: an existing file is replaced, or appended to,
/// when the first row is written.
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
    /// The whole file as it will be written: header, earlier rows, ours.
    text: String,
}

/// The CSV header of [`MetricsCsv`].
pub const METRICS_HEADER: &str = "epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,\
lr,images_per_sec,epoch_seconds,compute_seconds,wait_seconds,allreduce_seconds,eval_seconds,checkpoint_seconds";

impl MetricsCsv {
    /// A CSV at `path`: without `append` a new file (header, then the rows
    /// of this run) that replaces any existing one at the first row; with
    /// `append` the rows are added after the existing file's (for resumed
    /// runs; a missing or empty file gets the header).
    ///
    /// Fails, naming the path, when `path` exists but is not a regular
    /// file, its folder is missing or read-only, or (with `append`) it
    /// cannot be read as text.
    pub fn create(path: &Path, append: bool) -> Result<Self> {
        crate::output::check_writable(path)?;
        let mut text = String::new();
        if append && path.exists() {
            text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            // A CSV of an older version: the new columns go at the end.
            let first = text.lines().next().unwrap_or_default();
            if first != METRICS_HEADER && METRICS_HEADER.starts_with(first) && !first.is_empty() {
                let rest = text[first.len()..].to_string();
                text = format!("{METRICS_HEADER}{rest}");
            }
        }
        if text.is_empty() {
            text.push_str(METRICS_HEADER);
            text.push('\n');
        }
        Ok(MetricsCsv {
            path: path.to_path_buf(),
            text,
        })
    }

    /// Drops the rows of epoch `epoch` (1-based) and later, for a run
    /// resumed in that epoch: the CSV then reads as one run, without a
    /// second row for an epoch resumed mid-way nor the rows of epochs
    /// trained after an older checkpoint. Lines whose epoch does not parse
    /// are kept. Nothing changes on disk until the next row is written.
    /// Returns how many rows were dropped.
    pub fn drop_from_epoch(&mut self, epoch: u64) -> usize {
        let mut kept = String::with_capacity(self.text.len());
        let mut dropped = 0;
        for (i, line) in self.text.lines().enumerate() {
            let e = line
                .split(',')
                .next()
                .and_then(|f| f.trim().parse::<u64>().ok());
            if i > 0 && e.is_some_and(|e| e >= epoch) {
                dropped += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        self.text = kept;
        dropped
    }

    /// Appends one epoch's row.
    pub fn write(&mut self, r: &EpochReport) -> Result<()> {
        let (tl, ta) = match r.test {
            Some(t) => (format!("{:.6}", t.loss), format!("{:.6}", t.accuracy)),
            None => (String::new(), String::new()),
        };
        let secs = |s: Option<f64>| s.map(|s| format!("{s:.4}")).unwrap_or_default();
        let row = format!(
            "{},{},{:.6},{:.6},{},{},{:.6e},{:.3},{:.4},{:.4},{:.4},{:.4},{},{}",
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
            r.times.allreduce,
            secs(r.eval_seconds),
            secs(r.checkpoint_seconds)
        );
        self.line(&row)
    }

    fn line(&mut self, s: &str) -> Result<()> {
        let before = self.text.len();
        self.text.push_str(s);
        self.text.push('\n');
        let res = crate::output::write_atomic(&self.path, self.text.as_bytes());
        if res.is_err() {
            // Not on disk: a retry must not write the row twice.
            self.text.truncate(before);
        }
        res
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
    fn nothing_changes_on_disk_before_the_first_row() {
        let dir = std::env::temp_dir().join(format!("ringsgd_metrics_lazy_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.csv");
        std::fs::write(&path, "old contents\n").unwrap();
        let mut csv = MetricsCsv::create(&path, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old contents\n");
        csv.write(&EpochReport {
            epoch: 1,
            ..Default::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(METRICS_HEADER) && text.lines().count() == 2,
            "{text}"
        );
        // Appending to a file cut mid-line starts a new line.
        std::fs::write(&path, format!("{METRICS_HEADER}\n1,2,3")).unwrap();
        let mut csv = MetricsCsv::create(&path, true).unwrap();
        csv.write(&EpochReport {
            epoch: 2,
            ..Default::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().nth(1), Some("1,2,3"), "{text}");
        assert!(text.lines().nth(2).unwrap().starts_with("2,"), "{text}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_older_csv_gets_the_new_columns_in_its_header() {
        let dir = std::env::temp_dir().join(format!("ringsgd_metrics_old_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.csv");
        let old = METRICS_HEADER
            .strip_suffix(",eval_seconds,checkpoint_seconds")
            .unwrap();
        std::fs::write(&path, format!("{old}\n1,2,3,4,,,7,8,9,10,11,12\n")).unwrap();
        let mut csv = MetricsCsv::create(&path, true).unwrap();
        csv.write(&EpochReport {
            epoch: 2,
            eval_seconds: Some(1.5),
            checkpoint_seconds: Some(0.25),
            ..Default::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], METRICS_HEADER);
        assert_eq!(lines[1], "1,2,3,4,,,7,8,9,10,11,12");
        assert!(lines[2].ends_with(",1.5000,0.2500"), "{text}");
        assert_eq!(lines[2].split(',').count(), lines[0].split(',').count());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resume_drops_the_rows_of_its_epoch_and_later() {
        let dir = std::env::temp_dir().join(format!("ringsgd_metrics_drop_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.csv");
        let old = format!("{METRICS_HEADER}\n1,8\n2,16\n3,20\n");
        std::fs::write(&path, &old).unwrap();
        let mut csv = MetricsCsv::create(&path, true).unwrap();
        assert_eq!(csv.drop_from_epoch(2), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
        csv.write(&EpochReport {
            epoch: 2,
            ..Default::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let epochs: Vec<&str> = text.lines().map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(epochs, ["epoch", "1", "2"], "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_is_not_a_csv() {
        let err = MetricsCsv::create(&std::env::temp_dir(), false).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let err = MetricsCsv::create(Path::new("/nonexistent-dir/m.csv"), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/m.csv"));
    }
}
