//! Loading the data and driving the trainer on one rank.

use std::path::{Path, PathBuf};

use ringsgd::checkpoint::Checkpoint;
use ringsgd::collectives::{ensure_agree_keyed, Algorithm};
use ringsgd::comm::watch::{PeerTimeout, Phase};
use ringsgd::comm::{Communicator, Transport};
use ringsgd::data::{cifar, synthetic, Augmentation, DataIdentity, Dataset, Normalizer};
use ringsgd::nn::Model;
use ringsgd::optim::SgdConfig;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{Balance, MetricsCsv, StepTimes, TrainConfig, Trainer};
use ringsgd::{Error, Result};

use crate::cli::Args;
use crate::report::{EpochPrinter, Summary};

/// What a rank trains and tests on.
pub struct Data {
    pub train: Dataset,
    pub test: Dataset,
    pub norm: Normalizer,
    pub source: String,
    /// Sizes and digests, recorded in checkpoints and compared across ranks.
    pub identity: DataIdentity,
}

/// Loads (or generates, or downloads) the data. With a communicator, rank 0
/// downloads first and the others wait, so ranks on one machine share the
/// download; every rank then checks that all hold the same data.
pub fn load_data(args: &Args, comm: Option<&dyn Transport>) -> Result<Data> {
    let timeout = peer_timeout(args)?;
    if let (Some(c), Some(t)) = (comm, timeout) {
        c.set_watch(Some(t.watch(Phase::Setup, 0, 0)));
    }
    let data = if let Some(n) = args.synthetic {
        if n == 0 {
            return Err(Error::invalid("--synthetic: need at least 1 image"));
        }
        Data {
            train: synthetic::generate(n, args.seed ^ 0x5eed),
            test: synthetic::generate((n / 5).max(1), args.seed ^ 0x7e57),
            norm: Normalizer::identity(3),
            source: format!("synthetic ({n} images)"),
            identity: DataIdentity::default(),
        }
        .with_normalizer()?
    } else {
        let path = data_path(args, comm)?;
        let c = cifar::load_checked(&path, args.verify_md5.as_deref())?;
        let norm = Normalizer::from_dataset(&c.train)?;
        Data {
            train: c.train,
            test: c.test,
            norm,
            source: path.display().to_string(),
            identity: DataIdentity::default(),
        }
    };
    let kind = if args.synthetic.is_some() {
        "synthetic"
    } else {
        "CIFAR-10"
    };
    let data = Data {
        identity: DataIdentity::new(kind, &data.train, &data.test),
        ..data
    };
    if let Some(comm) = comm {
        // Pixels and labels of both sets, named part by part when they
        // differ (the normaliser follows from the training pixels).
        ensure_agree_keyed(comm, "the data", &data.identity.entries())?;
    }
    Ok(data)
}

impl Data {
    fn with_normalizer(mut self) -> Result<Self> {
        self.norm = Normalizer::from_dataset(&self.train)?;
        Ok(self)
    }
}

/// The data path, downloading the archive when asked to.
fn data_path(args: &Args, comm: Option<&dyn Transport>) -> Result<PathBuf> {
    if let Some(p) = &args.data {
        if p.exists() || !args.download {
            return Ok(p.clone());
        }
    } else if !args.download {
        return Err(Error::invalid(
            "no data: give --data PATH (CIFAR-10 binary .tar.gz or folder), --download, or \
             --synthetic N",
        ));
    }
    let cache = expand_home(&args.cache_dir);
    // The official archive's MD5 is known; another URL is taken as it comes.
    let md5 = (args.download_url == ringsgd::data::download::CIFAR10_URL)
        .then_some(ringsgd::data::download::CIFAR10_MD5);
    let fetch = || ringsgd::data::download::fetch_archive(&args.download_url, &cache, md5);
    match comm {
        Some(c) if c.size() > 1 => {
            // Rank 0 first; the others then find the file (same machine or
            // shared folder) or fetch their own copy. A download takes as
            // long as it takes: no peer deadline meanwhile.
            c.set_watch(None);
            let mine = if c.rank() == 0 { Some(fetch()) } else { None };
            let ok = [u8::from(mine.as_ref().is_none_or(|r| r.is_ok()))];
            let mut all = ok;
            c.broadcast(0, &mut all)?;
            match mine {
                Some(r) => r,
                None if all[0] == 1 => fetch(),
                None => Err(Error::Download {
                    url: args.download_url.clone(),
                    msg: "rank 0 failed to download it (see rank 0's error)".into(),
                }),
            }
        }
        _ => fetch(),
    }
}

/// `--peer-timeout` as a policy (`None` for 0: wait forever).
fn peer_timeout(args: &Args) -> Result<Option<PeerTimeout>> {
    let s = args.peer_timeout;
    if s == 0.0 {
        return Ok(None);
    }
    if !s.is_finite() || s < 0.0 {
        return Err(Error::invalid(format!(
            "--peer-timeout: {s} is not a number of seconds (0 turns the deadline off)"
        )));
    }
    PeerTimeout::new(std::time::Duration::from_secs_f64(s.min(1e6)))
        .map(Some)
        .map_err(|e| Error::invalid(format!("--peer-timeout: {e}")))
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Cores per rank: the flag, or this node's cores shared among the ranks
/// that mpirun placed on it.
fn cores(args: &Args, comm: &dyn Transport) -> usize {
    if let Some(c) = args.cores {
        return c;
    }
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local_ranks = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(if comm.transport_name() == "local" {
            comm.size()
        } else {
            1
        });
    (available / local_ranks.max(1)).max(1)
}

/// Trains on one rank; rank 0 prints and writes the files.
pub fn train(comm: &dyn Transport, args: &Args, data: &Data) -> Result<()> {
    let root = comm.rank() == 0;
    let [c, h, w] = data.train.shape().to_array();
    let model = if args.model == "pinet" {
        Model::pinet(args.seed)?
    } else {
        Model::from_spec(&args.model, [c, h, w], args.seed)?
    };
    let cores = cores(args, comm);
    let allowed = std::thread::available_parallelism().map_or(cores, |n| n.get());
    if cores > allowed {
        // available_parallelism follows the CPU affinity mask, which mpirun
        // sets when it binds ranks to cores (its default for np <= 2).
        // Under mpirun the likely cause is its binding; standalone, the
        // machine (or taskset) simply has fewer cores.
        let hint = if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
            "; mpirun binds ranks to cores by default: add --bind-to none"
        } else {
            ": the threads will share them"
        };
        crate::eprint_line(&format!(
            "rank {}: warning: --cores {cores} but this process may run on only {allowed} \
             core(s){hint}",
            comm.rank()
        ));
    }
    let pool = ComputePool::new(cores)?;
    let global_batch = args.global_batch;
    let spe = (data.train.len() / global_batch.max(1)) as u64;
    crate::limits::check_run_length(args, spe)?;
    let cfg = TrainConfig {
        global_batch,
        epochs: args.epochs,
        max_steps: args.max_steps,
        base_lr: args.lr.unwrap_or(0.05 * global_batch as f32 / 128.0),
        schedule: args.lr_schedule(spe)?,
        sgd: SgdConfig {
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            nesterov: args.nesterov,
        },
        algorithm: args.allreduce,
        wire: args.wire,
        bucket_bytes: match args.bucket_kb.unwrap_or(crate::cli::DEFAULT_BUCKET_KB) {
            kb if kb > 0 && args.allreduce == Algorithm::Ring => Some(kb * 1024),
            _ => None,
        },
        seed: args.seed,
        augment: (!args.no_augment).then(Augmentation::standard),
        verify_every: (args.verify_every > 0).then_some(args.verify_every),
        // Evaluating in batches of the training share keeps the workspaces
        // at their training size (a batch of 250 would add ~160 MB).
        eval_batch: (global_batch / comm.size()).max(1),
        peer_timeout: peer_timeout(args)?,
        balance: match args.balance.as_str() {
            "auto" => Balance::Auto {
                every_steps: (args.balance_every > 0).then_some(args.balance_every),
            },
            _ => Balance::Off,
        },
    };
    let mut trainer = Trainer::new(comm, pool, model, cfg)?;
    // Temperatures and clocks come from /sys; RINGSGD_SYSFS_ROOT reads a
    // copy elsewhere (tests use a fake one).
    if let Some(root) = std::env::var_os("RINGSGD_SYSFS_ROOT") {
        trainer.set_health_probe(ringsgd::health::HealthProbe::with_root(
            std::path::Path::new(&root),
        ));
    }
    if root {
        println!(
            "ringsgd cifar10: {} ({}) x {}, model {} ({} parameters), data {}, \
             {} train / {} test images, global batch {global_batch}, {} steps/epoch",
            plural(comm.size(), "rank"),
            comm.transport_name(),
            plural(cores, "core"),
            args.model,
            trainer.model().num_params(),
            data.source,
            data.train.len(),
            data.test.len(),
            spe
        );
    }
    if args.resume {
        let path = args
            .checkpoint
            .as_ref()
            .expect("clap: --resume requires --checkpoint");
        let loaded = root.then(|| {
            Checkpoint::load(path).and_then(|c| c.check_data(&data.identity, path).map(|_| c))
        });
        trainer.restore_from_root(loaded)?;
        if root {
            // Epochs numbered from 1, as in the epoch lines: the one the
            // run continues in (the last one when it is finished).
            let epoch = trainer.epoch() + u64::from(!trainer.finished());
            println!(
                "resumed from {} at epoch {epoch}, step {}",
                path.display(),
                trainer.global_step()
            );
        }
    }
    let mut csv = match (&args.metrics_csv, root) {
        (Some(p), true) => Some(MetricsCsv::create(p, args.resume)?),
        _ => None,
    };
    if let (Some(csv), true) = (csv.as_mut(), args.resume && !trainer.finished()) {
        // One run in the CSV: the rows from the epoch this run continues
        // in on are replaced by the new ones.
        let dropped = csv.drop_from_epoch(trainer.epoch() + 1);
        if dropped > 0 {
            log::info!(
                "--metrics-csv: replacing {dropped} row(s) of epoch {} and later, which the \
                 checkpoint does not include",
                trainer.epoch() + 1
            );
        }
    }
    let link = args.link_rate.or_else(guess_link_rate);
    let total_steps = args
        .max_steps
        .map_or(u64::MAX, |m| m)
        .min(args.epochs.saturating_mul(spe));
    let mut printer = EpochPrinter::new(
        root,
        !args.no_progress,
        args.log_every,
        args.epochs,
        total_steps,
        global_batch,
        comm,
        link,
    );
    let mut all_times: Vec<StepTimes> = Vec::new();
    let mut last_test = None;
    let run_start = std::time::Instant::now();
    if trainer.finished() && !args.no_eval {
        // Resuming a finished run: nothing to train, but say how it does.
        let t = trainer.evaluate(&data.test, &data.norm)?;
        last_test = Some(t.accuracy);
        if root {
            println!(
                "the checkpoint's run is finished (epoch {}); evaluated it: test_loss {:.4} \
                 test_acc {:.4}",
                trainer.epoch(),
                t.loss,
                t.accuracy
            );
        }
    }
    let mut last_ranks = Vec::new();
    while !trainer.finished() {
        printer.start_epoch(trainer.epoch() + 1, spe, trainer.global_step());
        let mut report = trainer.train_epoch(&data.train, &data.norm, &mut |p| printer.step(p))?;
        all_times.extend_from_slice(trainer.last_epoch_step_times());
        let end_start = std::time::Instant::now();
        if !args.no_eval {
            let t = trainer.evaluate(&data.test, &data.norm)?;
            last_test = Some(t.accuracy);
            report.test = Some(t);
            report.eval_seconds = Some(end_start.elapsed().as_secs_f64());
        }
        // Rank 0 writes while the others wait under the checkpoint deadline;
        // the checkpoint first, so that its time is in the CSV row.
        trainer.on_root(|t| {
            if let Some(path) = &args.checkpoint {
                let saving = std::time::Instant::now();
                let mut c = t.to_checkpoint();
                c.data = Some(data.identity.clone());
                c.save_atomic(path)?;
                report.checkpoint_seconds = Some(saving.elapsed().as_secs_f64());
            }
            if let Some(csv) = csv.as_mut() {
                csv.write(&report)?;
            }
            Ok(())
        })?;
        printer.finish_epoch(&report);
        printer.epoch_end_took(end_start.elapsed().as_secs_f64());
        last_ranks = report.ranks;
    }
    let total_s = run_start.elapsed().as_secs_f64();
    trainer.enter_phase(Phase::Finish);
    trainer.verify_replicas()?;
    trainer.on_root(|t| {
        if let Some(path) = &args.export {
            ringsgd::trainer::export_safetensors(t.model(), path)?;
            println!("exported weights to {}", path.display());
        }
        if let Some(csv) = &args.metrics_csv {
            let svg = crate::plot::plot_path(csv);
            crate::plot::write_curves(csv, &svg)?;
            println!("plotted the training curves to {}", svg.display());
        }
        Ok(())
    })?;
    let peak = ringsgd::trainer::peak_rss_bytes().unwrap_or(0) as f32;
    // Per rank: peak RSS, then the longest wait for peers in each phase.
    // Sum of one-hot rows = every rank's values; exact in f32 up to 16 MiB
    // granularity, so send MiB.
    let width = 1 + Phase::ALL.len();
    let mut rows = vec![0.0f32; comm.size() * width];
    let mine = &mut rows[comm.rank() * width..][..width];
    mine[0] = peak / (1024.0 * 1024.0);
    for (slot, s) in mine[1..].iter_mut().zip(comm.longest_waits().seconds()) {
        *slot = s as f32;
    }
    ringsgd::collectives::Allreducer::new(ringsgd::collectives::Algorithm::Ring)
        .allreduce_sum(comm, &mut rows)?;
    if root {
        let col_max = |c: usize| {
            rows.chunks_exact(width)
                .map(|r| r[c])
                .fold(0.0f32, f32::max)
        };
        let peak_max = col_max(0);
        println!(
            "weights hash {:016x} (identical on all ranks), peak RSS per rank {:.1} MiB (max), \
             {:.1} s",
            trainer.weights_hash(),
            peak_max,
            total_s
        );
        if let (Some(t), true) = (trainer.config().peer_timeout, comm.size() > 1) {
            let waits: Vec<String> = Phase::ALL
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let allowed = t.watch(*p, 0, 0).timeout.as_secs_f64();
                    format!("{p} {:.2}/{allowed:.0} s", col_max(1 + i))
                })
                .collect();
            println!(
                "longest wait for a peer (of the deadline): {}",
                waits.join(", ")
            );
        }
        if let Some(path) = &args.summary_json {
            let summary = Summary::new(
                args,
                comm,
                &trainer,
                &all_times,
                peak_max,
                total_s,
                &last_ranks,
            );
            summary.write(path)?;
        }
        // The last line, in every case.
        match last_test {
            Some(acc) => println!("test_accuracy={acc:.4}"),
            None => println!("test_accuracy=none (--no-eval)"),
        }
    }
    Ok(())
}

/// `1 rank`, `2 ranks`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The rate of the interface of the default route, from the kernel
/// (`/sys/class/net/IFACE/speed`, Mbit/s), when it reports one.
fn guess_link_rate() -> Option<f64> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 1 && f[1] == "00000000").then(|| f[0].to_string())
    })?;
    let speed = std::fs::read_to_string(format!("/sys/class/net/{iface}/speed")).ok()?;
    let mbit: f64 = speed.trim().parse().ok()?;
    (mbit > 0.0).then_some(mbit * 1e6)
}
