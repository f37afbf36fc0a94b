//! What rank 0 shows: a progress bar on a terminal, one line per epoch, and
//! the JSON summary for the speedup bench.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use ringsgd::comm::Communicator;
use ringsgd::trainer::{median_times, EpochReport, StepProgress, StepTimes, Trainer};
use ringsgd::{Error, Result};
use ringsgd_speedup::RunSummary;

use crate::cli::Args;

/// Per-epoch lines, with a progress bar when stderr is a terminal.
pub struct EpochPrinter {
    enabled: bool,
    bar_wanted: bool,
    epochs: u64,
    bar: Option<ProgressBar>,
    /// Host of each rank, to name the slowest.
    hosts: Vec<String>,
    /// The link's rate in bits per second, for the bandwidth's fraction.
    link_bits_per_s: Option<f64>,
}

impl EpochPrinter {
    /// `enabled` is false on ranks other than 0; `bar` asks for a progress
    /// bar, shown only when stderr is a terminal.
    pub fn new(
        enabled: bool,
        bar: bool,
        epochs: u64,
        comm: &dyn Communicator,
        link_bits_per_s: Option<f64>,
    ) -> Self {
        EpochPrinter {
            link_bits_per_s,
            enabled,
            bar_wanted: enabled && bar && std::io::stderr().is_terminal(),
            epochs,
            bar: None,
            hosts: (0..comm.size()).map(|r| comm.host_name(r)).collect(),
        }
    }

    pub fn start_epoch(&mut self, epoch: u64, steps: u64) {
        if !self.bar_wanted {
            return;
        }
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed} / ~{eta} left)",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.epochs));
        self.bar = Some(bar);
    }

    pub fn step(&mut self, p: &StepProgress) {
        if let Some(bar) = &self.bar {
            bar.set_position(p.step_in_epoch);
            bar.set_message(format!("loss {:.4} lr {:.4}", p.local_loss, p.lr));
        }
    }

    pub fn finish_epoch(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.enabled {
            return;
        }
        let test = r
            .test
            .map(|t| format!(" test_loss {:.4} test_acc {:.4}", t.loss, t.accuracy))
            .unwrap_or_default();
        // Who the others waited for: the wait column is how long.
        let slowest = r
            .slowest
            .map(|s| {
                let host = self.hosts.get(s.rank).map_or("?", String::as_str);
                format!(
                    "; slowest rank {} ({host}) computed {:.1}s, mean {:.1}s",
                    s.rank, s.compute, s.mean_compute
                )
            })
            .unwrap_or_default();
        // With overlap: the communication that ran behind backward.
        let hidden = if r.times.hidden > 0.0 {
            format!(" hidden {:.1}", r.times.hidden)
        } else {
            String::new()
        };
        // The ring's bus bandwidth, and its fraction of the link.
        let net = r
            .bus_bandwidth()
            .map(|bw| {
                let frac = self
                    .link_bits_per_s
                    .map(|l| format!(" = {:.0}% of the link", 100.0 * bw * 8.0 / l))
                    .unwrap_or_default();
                format!(" net {:.0} MB/s{frac}", bw / 1e6)
            })
            .unwrap_or_default();
        println!(
            "epoch {}/{} step {} train_loss {:.4} train_acc {:.4}{test} lr {:.5} img/s {:.1} \
             time {:.1}s (compute {:.1} wait {:.1} allreduce {:.1}{hidden}{net}{slowest})",
            r.epoch,
            self.epochs,
            r.step,
            r.train_loss,
            r.train_accuracy,
            r.lr,
            r.images_per_sec,
            r.seconds,
            r.times.compute,
            r.times.wait,
            r.times.allreduce
        );
    }
}

/// The `--summary-json` object: the speedup bench's
/// [`RunSummary`](ringsgd_speedup::RunSummary), the struct the bench parses
/// it into, so the writer and its reader share one definition.
pub struct Summary(RunSummary);

impl Summary {
    pub fn new(
        args: &Args,
        comm: &dyn Communicator,
        trainer: &Trainer<'_>,
        times: &[StepTimes],
        peak_rss_mib: f32,
        total_s: f64,
    ) -> Self {
        let warm = args
            .summary_warmup
            .unwrap_or((times.len() / 4).min(2))
            .min(times.len().saturating_sub(1));
        let med = median_times(&times[warm..]).unwrap_or_default();
        let params = trainer.model().num_params() as u64;
        let gb = trainer.config().global_batch;
        let ips = if med.step > 0.0 {
            gb as f64 / med.step
        } else {
            0.0
        };
        Summary(RunSummary {
            ranks: comm.size(),
            cores_per_rank: trainer.cores(),
            global_batch: gb,
            steps: times.len(),
            allreduce: trainer.config().algorithm.to_string(),
            param_count: params,
            grad_bytes: params * 4,
            warmup_steps: warm,
            step_s_median: med.step,
            compute_s_median: med.compute,
            allreduce_s_median: med.allreduce,
            wait_s_median: med.wait,
            images_per_sec: ips,
            peak_rss_bytes_max: (peak_rss_mib as f64 * 1024.0 * 1024.0) as u64,
            total_s,
        })
    }

    /// Writes the summary atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string(&self.0)
            .map_err(|e| Error::invalid(format!("--summary-json {}: {e}", path.display())))?;
        text.push('\n');
        ringsgd::output::write_atomic(path, text.as_bytes())
    }
}
