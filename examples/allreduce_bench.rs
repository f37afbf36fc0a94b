//! Allreduce benchmark under MPI: ring vs `MPI_Allreduce` vs gather-to-root,
//! in the style of nccl-tests.
//!
//! ```text
//! cargo build --release --examples
//! mpirun -np 4 target/release/examples/allreduce_bench [--csv FILE]
//! OMPI_MCA_btl=tcp,self mpirun -np 4 target/release/examples/allreduce_bench   # over TCP
//! ```
//!
//! For each message size (4 KiB to 64 MiB by default, x4 steps) and each
//! algorithm it reports the median time of one allreduce (sum of f32), the
//! algorithm bandwidth `algbw = bytes / time` and the bus bandwidth
//! `busbw = algbw * 2 (p - 1) / p`, both in GB/s (10^9 bytes per second), as
//! nccl-tests defines them. busbw is the per-link rate an allreduce achieves;
//! it is comparable across world sizes and with the link speed.
//!
//! Timing: the algorithms are interleaved iteration by iteration (so that
//! noise from a shared machine hits them alike); each iteration starts after
//! a barrier, its time is the slowest rank's, and the median over the
//! iterations is reported. `ring` and `naive` run through
//! [`Allreducer`] (including its per-call agreement check); `mpi` is a plain
//! out-of-place `MPI_Allreduce` on prepared buffers, the best MPI can do
//! here. Before timing, every algorithm's result is checked against the
//! exact sum.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use mpi::collective::SystemOperation;
use mpi::traits::CommunicatorCollectives;
use ringsgd::collectives::{allgather_bytes, Algorithm, Allreducer, Wire};
use ringsgd::comm::mpi::MpiComm;
use ringsgd::comm::{Communicator, Transport};

#[derive(Parser, Debug)]
#[command(
    about = "Allreduce benchmark: ring vs MPI_Allreduce vs gather-to-root (run under mpirun)"
)]
struct Args {
    /// Also write the results as CSV to this file (written by rank 0).
    #[arg(long)]
    csv: Option<String>,
    /// Smallest message in bytes (a multiple of 4).
    #[arg(long, default_value_t = 4096)]
    min_bytes: usize,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_bytes: usize,
    /// Each size is this many times the previous one.
    #[arg(long, default_value_t = 4)]
    factor: usize,
    /// Algorithms to run, comma-separated: ring, mpi, naive.
    #[arg(long, value_delimiter = ',', default_value = "ring,mpi,naive")]
    algorithms: Vec<String>,
    /// Ring segment sizes in bytes, comma-separated (0 = unsegmented). With
    /// more than one, the ring runs once per segment size (terminal only).
    #[arg(long, value_delimiter = ',', default_values_t = [Allreducer::DEFAULT_SEGMENT_BYTES])]
    segment_bytes: Vec<usize>,
    /// Timed iterations per size and algorithm (default: from 200 for small
    /// messages down to 8 for 64 MiB).
    #[arg(long)]
    iters: Option<usize>,
    /// Wire formats of the ring, comma-separated: f32, bf16, fp16 (the ring
    /// runs once per format; the other algorithms always move f32).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    wire: Vec<String>,
    /// Whether every ring call first checks that the ranks agree (a small
    /// allgather); the trainer agrees once at start and turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    check_every_call: bool,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
}

/// One benchmarked variant: an algorithm, and the ring's segment size.
#[derive(Clone)]
struct Variant {
    algorithm: Algorithm,
    segment_bytes: usize,
    wire: Wire,
    label: String,
}

struct Row {
    label: String,
    algorithm: Algorithm,
    bytes: usize,
    seconds: f64,
    /// Bytes rank 0 put on the wire per call (ring only).
    sent: Option<usize>,
}

/// Largest `--max-bytes` accepted.
const MAX_BYTES_LIMIT: usize = 1 << 30;

fn parse_args(args: &Args) -> Result<(Vec<usize>, Vec<Variant>), String> {
    if args.min_bytes == 0 || args.min_bytes % 4 != 0 {
        return Err(format!(
            "--min-bytes {}: must be a positive multiple of 4",
            args.min_bytes
        ));
    }
    if args.iters == Some(0) {
        return Err("--iters 0: must be at least 1 (the median of no timings is undefined)".into());
    }
    // Four buffers of the largest message are allocated on every rank.
    if args.max_bytes > MAX_BYTES_LIMIT {
        return Err(format!(
            "--max-bytes {}: at most {} (1 GiB; each rank allocates four buffers of that size)",
            args.max_bytes, MAX_BYTES_LIMIT
        ));
    }
    if args.factor < 2 {
        return Err(format!("--factor {}: must be at least 2", args.factor));
    }
    let mut sizes = Vec::new();
    let mut b = args.min_bytes;
    while b <= args.max_bytes {
        sizes.push(b);
        b = b.checked_mul(args.factor).ok_or("--max-bytes too large")?;
    }
    if sizes.is_empty() {
        return Err(format!(
            "--max-bytes {} is below --min-bytes {}",
            args.max_bytes, args.min_bytes
        ));
    }
    let multi = args.segment_bytes.len() > 1;
    if (multi || args.wire.len() > 1) && args.csv.is_some() {
        return Err(
            "--csv takes one --segment-bytes value and one --wire format (CSV rows are named \
             ring|mpi|naive)"
                .into(),
        );
    }
    let mut variants = Vec::new();
    for name in &args.algorithms {
        let algorithm: Algorithm = name.parse().map_err(|e| format!("--algorithms: {e}"))?;
        if algorithm == Algorithm::Ring {
            for w in &args.wire {
                let wire: Wire = w.parse().map_err(|e| format!("--wire: {e}"))?;
                for &seg in &args.segment_bytes {
                    let mut label = "ring".to_string();
                    if multi {
                        label += &format!("/seg={}", human(seg));
                    }
                    if wire != Wire::F32 || args.wire.len() > 1 {
                        label += &format!("/{wire}");
                    }
                    variants.push(Variant {
                        algorithm,
                        segment_bytes: seg,
                        wire,
                        label,
                    });
                }
            }
        } else {
            variants.push(Variant {
                algorithm,
                segment_bytes: 0,
                wire: Wire::F32,
                label: algorithm.to_string(),
            });
        }
    }
    Ok((sizes, variants))
}

fn human(bytes: usize) -> String {
    match bytes {
        0 => "none".into(),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

fn default_iters(bytes: usize) -> usize {
    ((512usize << 20) / bytes).clamp(8, 200)
}

/// Rank `r`'s test input; sums over up to thousands of ranks stay exact.
fn fill_input(buf: &mut [f32], rank: usize) {
    for (i, v) in buf.iter_mut().enumerate() {
        *v = ((i + 3 * rank) % 64) as f32;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(comm: &MpiComm, args: &Args) -> Result<Vec<Row>, String> {
    let (sizes, variants) = parse_args(args)?;
    let p = comm.size();
    let mut reducers: Vec<Allreducer> = variants
        .iter()
        .map(|v| {
            Allreducer::new(v.algorithm)
                .with_segment_bytes(v.segment_bytes)
                .with_wire(v.wire)
                .with_check_every_call(args.check_every_call)
        })
        .collect();
    let max_len = sizes[sizes.len() - 1] / 4;
    let mut buf = vec![0.0f32; max_len];
    let mut send = vec![0.0f32; max_len];
    let mut rows = Vec::new();
    for &bytes in &sizes {
        let len = bytes / 4;
        let iters = args.iters.unwrap_or_else(|| default_iters(bytes));
        // Correctness first: every variant against the exact sum.
        let mut expected = vec![0.0f32; len];
        for r in 0..p {
            let mut x = vec![0.0f32; len];
            fill_input(&mut x, r);
            expected.iter_mut().zip(&x).for_each(|(e, v)| *e += v);
        }
        for (v, reducer) in variants.iter().zip(reducers.iter_mut()) {
            fill_input(&mut buf[..len], comm.rank());
            send[..len].copy_from_slice(&buf[..len]);
            one_call(comm, v, reducer, &send[..len], &mut buf[..len])?;
            // 16-bit formats round each hop's partial sum: relative error
            // below 2^-7 (bf16) per hop, p hops at most.
            let tol = match v.wire {
                Wire::F32 => 0.0,
                Wire::Bf16 => p as f32 / 128.0,
                Wire::Fp16 => p as f32 / 1024.0,
            };
            let wrong = buf[..len]
                .iter()
                .zip(&expected)
                .position(|(g, e)| (g - e).abs() > tol * e.abs().max(1.0));
            if let Some(i) = wrong {
                return Err(format!(
                    "{} at {bytes} bytes: wrong result at {i}: {} instead of {}",
                    v.label, buf[i], expected[i]
                ));
            }
        }
        buf[..len].fill(0.0);
        send[..len].fill(0.0);
        let mut times = vec![Vec::with_capacity(iters); variants.len()];
        for it in 0..args.warmup + iters {
            for (i, (v, reducer)) in variants.iter().zip(reducers.iter_mut()).enumerate() {
                comm.barrier().map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                one_call(comm, v, reducer, &send[..len], &mut buf[..len])?;
                let dt = t0.elapsed().as_secs_f64();
                if it >= args.warmup {
                    times[i].push(dt);
                }
            }
        }
        for ((v, mine), reducer) in variants.iter().zip(&times).zip(&reducers) {
            // The time of an iteration is the slowest rank's.
            let bytes_out: Vec<u8> = mine.iter().flat_map(|t| t.to_le_bytes()).collect();
            let all = allgather_bytes(comm, &bytes_out).map_err(|e| e.to_string())?;
            let mut slowest: Vec<f64> = (0..iters)
                .map(|i| {
                    all.iter()
                        .map(|r| {
                            let mut w = [0u8; 8];
                            w.copy_from_slice(&r[8 * i..8 * i + 8]);
                            f64::from_le_bytes(w)
                        })
                        .fold(0.0, f64::max)
                })
                .collect();
            rows.push(Row {
                label: v.label.clone(),
                algorithm: v.algorithm,
                bytes,
                seconds: median(&mut slowest),
                sent: (v.algorithm == Algorithm::Ring).then(|| reducer.last_bytes_sent()),
            });
        }
    }
    Ok(rows)
}

fn one_call(
    comm: &MpiComm,
    v: &Variant,
    reducer: &mut Allreducer,
    send: &[f32],
    buf: &mut [f32],
) -> Result<(), String> {
    match v.algorithm {
        Algorithm::Mpi => {
            // Out of place on prepared buffers: no copy on our side.
            comm.raw()
                .all_reduce_into(send, buf, SystemOperation::sum());
            Ok(())
        }
        _ => reducer
            .allreduce_sum(comm, buf)
            .map_err(|e| format!("{}: {e}", v.label)),
    }
}

fn bandwidths(bytes: usize, seconds: f64, p: usize) -> (f64, f64) {
    let algbw = bytes as f64 / seconds / 1e9;
    let busbw = algbw * 2.0 * (p as f64 - 1.0) / p as f64;
    (algbw, busbw)
}

fn report(comm: &MpiComm, args: &Args, rows: &[Row]) -> Result<(), String> {
    let p = comm.size();
    let btl = std::env::var("OMPI_MCA_btl")
        .unwrap_or_else(|_| "default (shared memory on one host)".into());
    println!(
        "# allreduce_bench: {p} rank(s), transport {} (btl: {btl})",
        comm.transport_name()
    );
    println!("# median over iterations of the slowest rank; GB/s = 1e9 bytes/s; busbw = algbw * 2(p-1)/p");
    println!(
        "# {:>10}  {:<16} {:>12} {:>12} {:>12} {:>12}",
        "bytes", "algorithm", "time_us", "algbw_GB/s", "busbw_GB/s", "sent_B/rank"
    );
    for r in rows {
        let (algbw, busbw) = bandwidths(r.bytes, r.seconds, p);
        let sent = r.sent.map_or("-".to_string(), |b| b.to_string());
        println!(
            "  {:>10}  {:<16} {:>12.1} {:>12.3} {:>12.3} {:>12}",
            r.bytes,
            r.label,
            r.seconds * 1e6,
            algbw,
            busbw,
            sent
        );
    }
    // Ring vs MPI side by side, per size.
    let mpi: Vec<&Row> = rows
        .iter()
        .filter(|r| r.algorithm == Algorithm::Mpi)
        .collect();
    if !mpi.is_empty() {
        println!("# busbw ratio vs mpi (>1: faster than MPI_Allreduce)");
        for r in rows.iter().filter(|r| r.algorithm != Algorithm::Mpi) {
            if let Some(m) = mpi.iter().find(|m| m.bytes == r.bytes) {
                println!(
                    "  {:>10}  {:<16} {:>8.2}",
                    r.bytes,
                    r.label,
                    m.seconds / r.seconds
                );
            }
        }
    }
    if let Some(path) = &args.csv {
        let write = || -> std::io::Result<()> {
            let mut f = BufWriter::new(File::create(path)?);
            writeln!(f, "algorithm,ranks,bytes,seconds,algbw_gbps,busbw_gbps")?;
            for r in rows {
                let (algbw, busbw) = bandwidths(r.bytes, r.seconds, p);
                writeln!(
                    f,
                    "{},{p},{},{:.6e},{:.6},{:.6}",
                    r.algorithm, r.bytes, r.seconds, algbw, busbw
                )?;
            }
            f.flush()
        };
        write().map_err(|e| format!("--csv {path}: {e}"))?;
        println!("# wrote {path}");
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::init();
    let args = Args::parse();
    let comm = match ringsgd::comm::mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("allreduce_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Argument errors are the same on every rank: report once, exit cleanly.
    if let Err(e) = parse_args(&args) {
        if comm.rank() == 0 {
            eprintln!("allreduce_bench: {e}");
        }
        return ExitCode::FAILURE;
    }
    let result = run(&comm, &args).and_then(|rows| {
        if comm.rank() == 0 {
            report(&comm, &args, &rows)
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allreduce_bench: rank {}: {e}", comm.rank());
            comm.abort(1)
        }
    }
}
