//! What rank 0 shows: a progress bar on a terminal, one line per epoch, and
//! the JSON summary for the speedup bench.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ringsgd::comm::Transport;
use ringsgd::trainer::{median_times, EpochReport, RankReport, StepProgress, StepTimes, Trainer};
use ringsgd::{Error, Result};
use ringsgd_speedup::{RankSummary, RunSummary};

use crate::cli::{Args, LogEvery};

/// Per-epoch lines and step lines, with a progress bar when stderr is a
/// terminal.
pub struct EpochPrinter {
    enabled: bool,
    bar_wanted: bool,
    epochs: u64,
    bar: Option<ProgressBar>,
    /// Host of each rank, to name the slowest.
    hosts: Vec<String>,
    /// The link's rate in bits per second, for the bandwidth's fraction.
    link_bits_per_s: Option<f64>,
    /// Step lines: how often.
    log_every: LogEvery,
    /// Optimiser steps of the whole run (epochs x steps, or --max-steps).
    total_steps: u64,
    global_batch: usize,
    /// Wall-clock seconds and count of the steps trained by this process
    /// (epoch ends excluded), for the ETA.
    train_secs: f64,
    train_steps: u64,
    /// When the last step ended (or the epoch started).
    mark: Instant,
    /// The last step line: when, and at which global step.
    last_line: (Instant, u64),
    /// Seconds of the last epoch end (evaluation and checkpoint), for the ETA.
    epoch_end_secs: f64,
    steps_per_epoch: u64,
}

/// `1:02:03` or `2:03`.
fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl EpochPrinter {
    /// `enabled` is false on ranks other than 0; `bar` asks for a progress
    /// bar, shown only when stderr is a terminal; `log_every` `None` is the
    /// default (every 30 s unless the bar is shown).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        enabled: bool,
        bar: bool,
        log_every: Option<LogEvery>,
        epochs: u64,
        total_steps: u64,
        global_batch: usize,
        comm: &dyn Transport,
        link_bits_per_s: Option<f64>,
    ) -> Self {
        let bar_wanted = enabled && bar && std::io::stderr().is_terminal();
        let log_every = match log_every {
            Some(l) => l,
            None if bar_wanted => LogEvery::Off,
            None => LogEvery::Seconds(30.0),
        };
        let now = Instant::now();
        EpochPrinter {
            link_bits_per_s,
            enabled,
            bar_wanted,
            epochs,
            bar: None,
            hosts: (0..comm.size()).map(|r| comm.host_name(r)).collect(),
            log_every,
            total_steps,
            global_batch,
            train_secs: 0.0,
            train_steps: 0,
            mark: now,
            last_line: (now, 0),
            epoch_end_secs: 0.0,
            steps_per_epoch: 1,
        }
    }

    pub fn start_epoch(&mut self, epoch: u64, steps: u64, global_step: u64) {
        self.mark = Instant::now();
        self.steps_per_epoch = steps.max(1);
        if self.last_line.1 == 0 {
            self.last_line = (self.mark, global_step);
        }
        if !self.bar_wanted {
            return;
        }
        // At most 80 columns: "epoch 12/30 [20] 390/390 loss 2.3026
        // 1234 img/s eta 12:34:56".
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:20}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.epochs));
        self.bar = Some(bar);
    }

    /// Seconds left in the whole run: the remaining steps at this
    /// process's mean step time, plus the remaining epoch ends at the last
    /// one's duration.
    fn eta(&self, p: &StepProgress) -> f64 {
        let left = self.total_steps.saturating_sub(p.global_step);
        let per_step = self.train_secs / self.train_steps.max(1) as f64;
        let ends = self.total_steps.div_ceil(self.steps_per_epoch) + 1 - p.epoch.max(1);
        left as f64 * per_step + ends as f64 * self.epoch_end_secs
    }

    pub fn step(&mut self, p: &StepProgress) {
        let now = Instant::now();
        self.train_secs += now.duration_since(self.mark).as_secs_f64();
        self.train_steps += 1;
        self.mark = now;
        if !self.enabled {
            return;
        }
        let per_step = self.train_secs / self.train_steps as f64;
        let ips = self.global_batch as f64 / per_step.max(1e-12);
        let eta = hms(self.eta(p));
        if let Some(bar) = &self.bar {
            // The message first: the position's redraw then shows this
            // step's loss (a throttled message redraw would lag a step).
            bar.set_message(format!("loss {:.4} {ips:.0} img/s eta {eta}", p.local_loss));
            bar.set_position(p.step_in_epoch);
        }
        let due = match self.log_every {
            LogEvery::Off => false,
            LogEvery::Steps(n) => p.global_step % n == 0,
            LogEvery::Seconds(s) => now.duration_since(self.last_line.0).as_secs_f64() >= s,
        };
        if due {
            let line = format!(
                "step epoch {}/{} step {}/{} (run {}/{}) loss {:.4} lr {:.5} img/s {ips:.1} \
                 eta {eta} (run)",
                p.epoch,
                self.epochs,
                p.step_in_epoch,
                p.steps_per_epoch,
                p.global_step,
                self.total_steps,
                p.local_loss,
                p.lr,
            );
            match &self.bar {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
            self.last_line = (now, p.global_step);
        }
    }

    /// The duration of the last epoch end (evaluation and checkpoint), for
    /// the ETA.
    pub fn epoch_end_took(&mut self, secs: f64) {
        self.epoch_end_secs = secs;
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
            .as_ref()
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
        let mut ends = String::new();
        if let Some(e) = r.eval_seconds {
            ends.push_str(&format!(" eval {e:.1}s"));
        }
        if let Some(c) = r.checkpoint_seconds {
            ends.push_str(&format!(" checkpoint {c:.1}s"));
        }
        println!(
            "epoch {}/{} step {} train_loss {:.4} train_acc {:.4}{test} lr {:.5} img/s {:.1} \
             time {:.1}s (compute {:.1} wait {:.1} allreduce {:.1}{hidden}{net}{slowest}){ends}",
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
        // Per rank: where it runs, what it did, how hot and how fast its
        // node ran (what the machine exposes).
        let show_ranks = r.ranks.len() > 1 || r.ranks.iter().any(|k| k.health.is_known());
        if show_ranks {
            let ranks: Vec<String> = r
                .ranks
                .iter()
                .map(|k| {
                    let share = r
                        .shares
                        .get(k.rank)
                        .map_or(String::new(), |s| format!(" share {s}"));
                    format!("{}{share}", rank_cell(k))
                })
                .collect();
            println!("  ranks: {}", ranks.join(" | "));
        }
        for w in r.ranks.iter().filter_map(|k| k.throttle_warning()) {
            println!("warning: {w}");
        }
    }
}

/// `0 (pi1) compute 46.8s waited 0.3s 61.2°C 1800/1800 MHz` (waited: for
/// the others and the network).
fn rank_cell(k: &RankReport) -> String {
    let h = &k.health;
    let mut cell = format!(
        "{} ({}) compute {:.1}s waited {:.1}s",
        k.rank, k.host, k.compute, k.wait
    );
    if let Some(t) = h.temp_max_c {
        cell.push_str(&format!(" {t:.1}°C"));
    }
    match (h.mhz_mean, h.max_mhz) {
        (Some(c), Some(m)) => cell.push_str(&format!(" {c:.0}/{m:.0} MHz")),
        (Some(c), None) => cell.push_str(&format!(" {c:.0} MHz")),
        _ => {}
    }
    cell
}

/// The `--summary-json` object: the speedup bench's
/// [`RunSummary`](ringsgd_speedup::RunSummary), the struct the bench parses
/// it into, so the writer and its reader share one definition.
pub struct Summary(RunSummary);

impl Summary {
    pub fn new(
        args: &Args,
        comm: &dyn Transport,
        trainer: &Trainer<'_>,
        times: &[StepTimes],
        peak_rss_mib: f32,
        total_s: f64,
        ranks: &[RankReport],
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
            per_rank: ranks
                .iter()
                .map(|k| RankSummary {
                    rank: k.rank,
                    host: k.host.clone(),
                    compute_s: k.compute,
                    waited_s: k.wait,
                    temp_c: k.health.temp_max_c,
                    mhz: k.health.mhz_mean,
                    max_mhz: k.health.max_mhz,
                    throttled: k.health.throttled(),
                })
                .collect(),
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
