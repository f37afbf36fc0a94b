//! Times PiNet training steps (forward + backward + SGD update) or forward
//! passes on random data, in a compute pool of exactly `--cores` threads.
//! A step is the library's own [`Trainer::step`] on one rank (what
//! `train_epoch` runs, minus batch assembly), so the figures are those of
//! training, not of a hand-made loop; forward is
//! [`Trainer::evaluate_batch`].
//!
//! ```text
//! cargo run --release --example pinet_bench -- --cores 2 --batch 32 --steps 50 [--forward-only] [--warmup 5] [--runs 5] [--profile] [--kernels portable|neon|avx2|avx512|auto]
//! ```
//!
//! `--kernels` forces a kernel family (default: `RINGSGD_KERNELS`, else the
//! best this CPU runs); the `kernels:` line says which ran.
//!
//! The last line is always `images_per_sec=<number>` (scripts rely on it):
//! the median over `--runs` runs of `--steps` steps each. The machine may be
//! shared: like the PyTorch reference script, a run during which other
//! processes used more than 3% of the CPUs is discarded and retried (at most
//! 4 x runs attempts; if none is clean the median of all is printed and the
//! `runs:` line says so).
//! `--profile` adds a per-layer table (forward/backward ms per step,
//! GFLOP/s, share of the step), with backward FLOPs as computed (2x forward,
//! 1x for the first layer, which needs no input gradient). The headline
//! GFLOP/s counts a training step as 3x forward, like the PyTorch script.

use ndarray::Array4;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringsgd::comm::local::LocalComm;
use ringsgd::kernels::{active_isa, select_isa, Isa};
use ringsgd::nn::Model;
use ringsgd::optim::LrSchedule;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{TrainConfig, Trainer};
use std::time::Instant;

struct Args {
    cores: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    forward_only: bool,
    profile: bool,
    runs: usize,
    kernels: Option<Isa>,
}

/// Runs whose machine-wide CPU use by other processes exceeds this fraction
/// are discarded (the machine is shared), as in the PyTorch reference script.
const CLEAN_FRAC: f64 = 0.03;

/// Machine-wide busy CPU time minus this process's own, over a run.
struct Meter {
    busy0: f64,
    own0: f64,
}

/// (machine busy seconds incl. steal, this process's CPU seconds), from /proc
/// in clock ticks of 1/100 s (Linux's USER_HZ).
fn cpu_counters() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = if v.len() == 8 {
        v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    } else {
        0.0
    };
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    (busy / 100.0, own / 100.0)
}

impl Meter {
    fn start() -> Meter {
        let (busy0, own0) = cpu_counters();
        Meter { busy0, own0 }
    }
    /// Other processes' share of all CPUs during `wall` seconds.
    fn other_frac(&self, wall: f64) -> f64 {
        let (busy, own) = cpu_counters();
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        ((busy - self.busy0) - (own - self.own0)).max(0.0) / (wall * ncpu)
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        cores: 1,
        batch: 32,
        steps: 20,
        warmup: 3,
        forward_only: false,
        profile: false,
        runs: 1,
        kernels: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a non-negative integer"))
        };
        match flag.as_str() {
            "--cores" => a.cores = val("--cores")?,
            "--batch" => a.batch = val("--batch")?,
            "--steps" => a.steps = val("--steps")?,
            "--warmup" => a.warmup = val("--warmup")?,
            "--runs" => a.runs = val("--runs")?,
            "--forward-only" => a.forward_only = true,
            "--profile" => a.profile = true,
            "--kernels" => {
                let v = it.next().ok_or("--kernels needs a value")?;
                a.kernels = Some(v.parse().map_err(|e| format!("--kernels: {e}"))?);
            }
            "-h" | "--help" => {
                return Err("usage: pinet_bench --cores N --batch B --steps S [--forward-only] [--warmup W] [--runs R] [--profile] [--kernels portable|neon|avx2|avx512|auto]".into())
            }
            other => return Err(format!("unknown flag `{other}` (see --help)")),
        }
    }
    if a.batch == 0 || a.steps == 0 || a.runs == 0 {
        return Err("--batch, --steps and --runs must be >= 1".into());
    }
    Ok(a)
}

/// Nominal clock (GHz) from /proc/cpuinfo's `cpu MHz` (x86), else the
/// cpufreq maximum (ARM boards such as the Pi list no clock in cpuinfo).
fn cpu_ghz() -> Option<f64> {
    let from_cpuinfo = || -> Option<f64> {
        let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let mhz = info
            .lines()
            .find(|l| l.starts_with("cpu MHz"))?
            .split(':')
            .nth(1)?
            .trim()
            .parse::<f64>()
            .ok()?;
        Some(mhz / 1000.0)
    };
    from_cpuinfo().or_else(|| {
        let khz = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()?;
        Some(khz / 1e6)
    })
}

/// The ARM core's part number from /proc/cpuinfo (`CPU part : 0xd08`).
#[cfg(target_arch = "aarch64")]
fn arm_cpu_part() -> Option<u32> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let v = info
        .lines()
        .find(|l| l.starts_with("CPU part"))?
        .split(':')
        .nth(1)?;
    u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok()
}

/// FLOPs per cycle per core of the widest FMA the active kernels use.
fn flops_per_cycle() -> (f64, &'static str) {
    match active_isa() {
        Isa::Avx512 => return (64.0, "AVX-512: 2 x 16-lane FMA"),
        Isa::Avx2Fma => return (32.0, "AVX2+FMA: 2 x 8-lane FMA"),
        Isa::Portable | Isa::Neon => {}
    }
    // Cortex-A76 (Pi 5) and its Neoverse N1 sibling: two 128-bit FMA pipes;
    // Cortex-A72 (Pi 4) and older: one 4-lane FMA per cycle.
    #[cfg(target_arch = "aarch64")]
    return match arm_cpu_part() {
        Some(0xd0b | 0xd0c) => (16.0, "NEON: 2 x 4-lane FMA (Cortex-A76 class)"),
        _ => (8.0, "NEON: 1 x 4-lane FMA (Cortex-A72 class)"),
    };
    #[allow(unreachable_code)]
    (8.0, "SSE: 4-lane mul + add")
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if let Some(isa) = args.kernels {
        select_isa(isa)?;
    }
    println!("kernels: {}", active_isa());
    let pool = ComputePool::new(args.cores)?;
    let world = LocalComm::world(1)?;
    let bench = Bencher::new(&args);
    // The README's recipe (lr 0.05 x batch / 128, momentum 0.9, weight
    // decay 5e-4), at a constant rate: a benchmark has no run length.
    let mut cfg = TrainConfig::pinet_defaults(args.batch, 1);
    cfg.schedule = LrSchedule::Constant;
    let mut trainer = Trainer::new(&world[0], pool, Model::pinet(1)?, cfg)?;
    let step = |trainer: &mut Trainer<'_>| bench.step(trainer);
    for _ in 0..args.warmup {
        step(&mut trainer)?;
    }
    let nops = trainer.model().last_profile().len();
    // Per-op minimum over the timed steps: robust to other processes.
    let mut acc = vec![[f64::MAX; 2]; nops];
    // Every step's per-op times, for the medians.
    let mut per_op: Vec<Vec<[f64; 2]>> = vec![Vec::new(); nops];
    let mut times = Vec::with_capacity(args.steps);
    // Repeat runs of `steps` steps until `runs` of them were clean (other
    // processes used < 3% of the machine), at most 4 x runs attempts.
    let mut clean_ips = Vec::new();
    let mut all_ips = Vec::new();
    let mut fracs = Vec::new();
    for attempt in 0..4 * args.runs {
        let meter = Meter::start();
        let t_run = Instant::now();
        for _ in 0..args.steps {
            let t0 = Instant::now();
            step(&mut trainer)?;
            times.push(t0.elapsed().as_secs_f64());
            let profile = trainer.model().last_profile();
            for ((a, all), p) in acc.iter_mut().zip(&mut per_op).zip(profile) {
                a[0] = a[0].min(p.forward_s);
                a[1] = a[1].min(p.backward_s);
                all.push([p.forward_s, p.backward_s]);
            }
        }
        let wall = t_run.elapsed().as_secs_f64();
        let other = meter.other_frac(wall);
        let run_ips = (args.steps * args.batch) as f64 / wall;
        fracs.push(format!("{other:.3}"));
        all_ips.push(run_ips);
        if other <= CLEAN_FRAC {
            clean_ips.push(run_ips);
        }
        if clean_ips.len() >= args.runs {
            break;
        }
        if other > CLEAN_FRAC && attempt + 1 < 4 * args.runs {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }
    let total: f64 = times.iter().sum();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_step = sorted[sorted.len() / 2];
    let clean_n = clean_ips.len();
    let ips = if clean_n > 0 {
        median(&mut clean_ips)
    } else {
        median(&mut all_ips)
    };
    println!(
        "runs: clean={clean_n} attempts={} interference_frac=[{}] (median over {} runs)",
        all_ips.len(),
        fracs.join(","),
        if clean_n > 0 {
            "clean"
        } else {
            "ALL (none clean)"
        }
    );
    let model = trainer.model();
    let fwd = model.forward_flops() as f64;
    // FLOPs per image as the PyTorch reference script counts them (3 x
    // forward for a training step) so GFLOP/s compare directly.
    let flop_per_img = if args.forward_only { fwd } else { 3.0 * fwd };
    let gflops = ips * flop_per_img / 1e9;
    let (fpc, isa) = flops_per_cycle();
    let mode = if args.forward_only {
        "forward"
    } else {
        "train_step"
    };
    println!(
        "pinet {mode}: cores={} batch={} steps={} min_step_ms={:.2} median_step_ms={:.2} mean_step_ms={:.2}",
        args.cores,
        args.batch,
        args.steps,
        sorted[0] * 1e3,
        median_step * 1e3,
        total / times.len() as f64 * 1e3
    );
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] * 1e3;
    println!(
        "step_ms percentiles: p10={:.2} p25={:.2} p50={:.2} p75={:.2} p90={:.2} max={:.2}",
        pct(0.1),
        pct(0.25),
        pct(0.5),
        pct(0.75),
        pct(0.9),
        pct(1.0)
    );
    match cpu_ghz() {
        Some(ghz) => {
            let peak = ghz * fpc * args.cores as f64;
            println!(
                "achieved {gflops:.1} GFLOP/s ({:.1} MFLOP/img) vs peak {peak:.1} GFLOP/s ({isa}, {} cores at the {ghz:.2} GHz nominal clock; turbo may run higher): {:.0}% of that peak",
                flop_per_img / 1e6,
                args.cores,
                100.0 * gflops / peak
            );
        }
        None => println!(
            "achieved {gflops:.1} GFLOP/s (peak unknown: no clock in /proc/cpuinfo or cpufreq)"
        ),
    }
    if args.profile {
        let step_s = sorted[0];
        println!(
            "per-layer: minimum over the timed steps (GFLOP/s from it), share of the fastest step; *_med: median over the timed steps"
        );
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
            "layer", "fwd_ms", "fwd_GF/s", "bwd_ms", "bwd_GF/s", "share", "fwd_med", "bwd_med"
        );
        let mut med_layers = 0.0;
        for ((a, all), p) in acc.iter().zip(&per_op).zip(model.last_profile()) {
            let mut fs: Vec<f64> = all.iter().map(|t| t[0]).collect();
            let mut bs: Vec<f64> = all.iter().map(|t| t[1]).collect();
            let (fm, bm) = (median(&mut fs), median(&mut bs));
            med_layers += fm + bm;
            let (f, b) = (a[0], a[1]);
            let fl = p.forward_flops as f64 * args.batch as f64;
            let gf = |flops: f64, s: f64| {
                if flops > 0.0 && s > 0.0 {
                    format!("{:.1}", flops / s / 1e9)
                } else {
                    "-".into()
                }
            };
            println!(
                "{:<12} {:>9.3} {:>9} {:>9.3} {:>9} {:>6.1}% {:>9.3} {:>9.3}",
                p.name,
                f * 1e3,
                gf(fl, f),
                b * 1e3,
                gf(p.backward_flops as f64 * args.batch as f64, b),
                100.0 * (f + b) / step_s,
                fm * 1e3,
                bm * 1e3
            );
        }
        let layers: f64 = acc.iter().map(|a| a[0] + a[1]).sum();
        println!(
            "{:<12} {:>50.1}% {:>19.3}",
            "other(loss,sgd,..)",
            100.0 * (step_s - layers) / step_s,
            (median_step - med_layers) * 1e3
        );
    }
    println!("images_per_sec={ips:.1}");
    Ok(())
}

/// The same batch and seed; the PiNet step (or forward pass) of one model.
struct Bencher {
    x: Array4<f32>,
    labels: Vec<u8>,
    forward_only: bool,
}

impl Bencher {
    fn new(args: &Args) -> Bencher {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = Array4::from_shape_fn((args.batch, 3, 32, 32), |_| rng.random_range(-2.0f32..2.0));
        let labels = (0..args.batch).map(|_| rng.random_range(0..10u8)).collect();
        Bencher {
            x,
            labels,
            forward_only: args.forward_only,
        }
    }

    fn step(&self, trainer: &mut Trainer<'_>) -> ringsgd::Result<()> {
        if self.forward_only {
            trainer.evaluate_batch(self.x.view(), &self.labels)?;
        } else {
            trainer.step(self.x.view(), &self.labels)?;
        }
        Ok(())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Err(e) = run() {
        eprintln!("pinet_bench: {e}");
        std::process::exit(2);
    }
}
