//! Options of the speedup sweep, from command-line flags and `RINGSGD_*`
//! environment variables (flags win over variables, variables over
//! defaults). Every flag `--foo-bar` has the variable `RINGSGD_FOO_BAR`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::Broadcast;
use super::projection::ModelOptions;
use super::summary::parse_algorithm;
use super::sweep::{plan_sweep, DataSource, RunConfig};
use ringsgd::collectives::Algorithm;
use ringsgd::{Error, Result};

/// Usage text of `cargo bench --bench speedup -- [FLAGS]`.
pub const USAGE: &str = "\
cargo bench --bench speedup -- [FLAGS]
Every flag --foo-bar can also be set as the environment variable RINGSGD_FOO_BAR
(flags win). Ranges: 3, 1..4 or 1..=4 (both include 4), or lists 1,2,4.

Sweep:
  --nodes R            ranks (nodes) to sweep      [1..=min(4, cores), or 1..=hosts in --hostfile]
  --cores R            cores per rank to sweep     [1..=min(4, cores)]
  --algorithms LIST    ring,mpi,naive              [all three]
  --steps S            steps per run, warm-up included [12]
  --global-batch B     images per step over all ranks [64]
  --synthetic N        synthetic CIFAR-shaped images [1024]
  --data PATH          real CIFAR-10 instead of synthetic data
  --hostfile FILE      run on a cluster (one rank per host, --map-by node)
  --oversubscribe      also run configurations with nodes x cores > this machine's cores
  --seed N             seed of every run [1]
  --timeout SECS       wall-clock limit per run [600]
  --smoke              tiny sweep: nodes 1..2, cores 1, 4 steps, batch 8, 64 images
Launching:
  --bin PATH           training binary; skips `cargo build --release --example cifar10`
  --mpirun PATH        Open MPI's mpirun [mpirun]
  --mpirun-args ARGS   extra mpirun arguments, split on spaces (e.g. \"--mca btl tcp,self\")
  --example-args ARGS  extra arguments of the training binary, split on spaces (e.g.
                       \"--bucket-kb 0\": no overlap, so that the allreduce column is the
                       whole allreduce and the link fit a link's; \"--wire bf16\")
  --out DIR            output directory [target/speedup]
  --epoch-images N     images per epoch for the epoch column [50000]
Model:
  --model-image-ms T   compute ms per image on one target node (measure it on a Pi)
  --model-summary FILE --summary-json of a 1-rank run on the target node: sets the
                       per-image time to compute_s_median / global_batch
  --model-cores C      which measured cores-per-rank fit to use [largest on 1 node]
  --model-alpha-us A   per-message latency of the network links [100]
  --model-payload F    payload fraction of the nominal link rate [0.94]
  --model-max-nodes P  predict 1..=P nodes [64]
  --model-bcast B      gather-to-root broadcast: sequential|tree [sequential]
  --help               this text
";

/// Everything the speedup bench can be told.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepOptions {
    /// Node counts to sweep.
    pub nodes: Vec<usize>,
    /// Cores per rank to sweep.
    pub cores: Vec<usize>,
    /// Algorithms to sweep.
    pub algorithms: Vec<Algorithm>,
    /// Steps per run.
    pub steps: usize,
    /// Images per step over all ranks.
    pub global_batch: usize,
    /// Synthetic images (when `data` is `None`).
    pub synthetic: usize,
    /// Real CIFAR-10.
    pub data: Option<PathBuf>,
    /// Cluster hostfile.
    pub hostfile: Option<PathBuf>,
    /// Run configurations with `nodes x cores` above the local cores too.
    pub oversubscribe: bool,
    /// Seed of every run.
    pub seed: u64,
    /// Limit per run.
    pub timeout: Duration,
    /// Tiny sweep.
    pub smoke: bool,
    /// Training binary given by the user.
    pub bin: Option<PathBuf>,
    /// `mpirun` program.
    pub mpirun: PathBuf,
    /// Extra `mpirun` arguments.
    pub mpirun_args: Vec<String>,
    /// Extra arguments of the training binary.
    pub example_args: Vec<String>,
    /// Output directory (`None`: the bench picks `target/speedup`).
    pub out: Option<PathBuf>,
    /// Images per epoch.
    pub epoch_images: usize,
    /// Model knobs.
    pub model: ModelOptions,
    /// Summary of a one-rank run on the target node (`--model-summary`),
    /// read by the bench to set `model.image_s`.
    pub model_summary: Option<PathBuf>,
    /// `--help` was given.
    pub help: bool,
}

/// Flags that take a value.
const VALUED: &[&str] = &[
    "nodes",
    "cores",
    "algorithms",
    "steps",
    "global-batch",
    "synthetic",
    "data",
    "hostfile",
    "seed",
    "timeout",
    "bin",
    "mpirun",
    "mpirun-args",
    "example-args",
    "out",
    "epoch-images",
    "model-image-ms",
    "model-summary",
    "model-cores",
    "model-alpha-us",
    "model-payload",
    "model-max-nodes",
    "model-bcast",
];
/// Flags without a value.
const SWITCHES: &[&str] = &["oversubscribe", "smoke", "help"];
/// Flags cargo passes to `harness = false` benches; ignored.
const CARGO_FLAGS: &[&str] = &["bench"];

/// The environment variable of flag `--name`.
pub fn env_var_of(name: &str) -> String {
    format!("RINGSGD_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// A raw value and where it came from (`--flag` or `RINGSGD_FLAG`), for
/// error messages.
#[derive(Debug, Clone)]
struct Raw {
    value: String,
    source: String,
}

fn bad(raw: &Raw, what: &str) -> Error {
    Error::invalid(format!("{} = {:?}: {what}", raw.source, raw.value))
}

/// Parses `3`, `1..4`, `1..=4` (inclusive) or `1,2,4` into sorted distinct
/// positive integers.
///
/// ```
/// use ringsgd_speedup::parse_counts;
/// assert_eq!(parse_counts("1..4").unwrap(), vec![1, 2, 3, 4]);
/// assert_eq!(parse_counts("4,1,2").unwrap(), vec![1, 2, 4]);
/// assert!(parse_counts("0..2").is_err());
/// ```
pub fn parse_counts(s: &str) -> std::result::Result<Vec<usize>, String> {
    let num = |t: &str| -> std::result::Result<usize, String> {
        let n: usize = t
            .trim()
            .parse()
            .map_err(|_| format!("{t:?} is not a whole number"))?;
        if n == 0 {
            return Err("counts must be >= 1".into());
        }
        Ok(n)
    };
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        if let Some((a, b)) = part.split_once("..") {
            let (lo, hi) = (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?);
            if lo > hi {
                return Err(format!("empty range {part}"));
            }
            if hi - lo > 4096 {
                return Err(format!("range {part} is too long"));
            }
            out.extend(lo..=hi);
        } else {
            out.push(num(part)?);
        }
    }
    if out.is_empty() {
        return Err("no counts given".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_bool(raw: &Raw) -> Result<bool> {
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad(raw, "expected 1/0, true/false, yes/no")),
    }
}

fn parse_num<T: std::str::FromStr>(raw: &Raw, what: &str) -> Result<T> {
    raw.value.trim().parse().map_err(|_| bad(raw, what))
}

/// Hosts listed in an Open MPI hostfile (non-empty lines, `#` comments).
pub fn hostfile_hosts(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let n = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .count();
    if n == 0 {
        return Err(Error::Data {
            file: path.to_path_buf(),
            record: None,
            msg: "hostfile lists no hosts".into(),
        });
    }
    Ok(n)
}

impl SweepOptions {
    /// Defaults for a machine with `local_cores` cores (see [`USAGE`]).
    pub fn defaults(local_cores: usize, smoke: bool) -> Self {
        let k = local_cores.clamp(1, 4);
        SweepOptions {
            nodes: if smoke { vec![1, 2] } else { (1..=k).collect() },
            cores: if smoke { vec![1] } else { (1..=k).collect() },
            algorithms: Algorithm::ALL.to_vec(),
            steps: if smoke { 4 } else { 12 },
            global_batch: if smoke { 8 } else { 64 },
            synthetic: if smoke { 64 } else { 1024 },
            data: None,
            hostfile: None,
            oversubscribe: false,
            seed: 1,
            timeout: Duration::from_secs(if smoke { 120 } else { 600 }),
            smoke,
            bin: None,
            mpirun: "mpirun".into(),
            mpirun_args: Vec::new(),
            example_args: Vec::new(),
            out: None,
            epoch_images: 50_000,
            model: ModelOptions::default(),
            model_summary: None,
            help: false,
        }
    }

    /// Parses flags `args` (without the program name) over the variables
    /// returned by `env`, on a machine with `local_cores` cores. Cargo's
    /// `--bench` is ignored; any other unknown flag is an error.
    pub fn parse<I, F>(args: I, env: F, local_cores: usize) -> Result<Self>
    where
        I: IntoIterator<Item = String>,
        F: Fn(&str) -> Option<String>,
    {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        for &name in VALUED.iter().chain(SWITCHES) {
            let var = env_var_of(name);
            if let Some(value) = env(&var) {
                raw.insert(name, Raw { value, source: var });
            }
        }
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(Error::invalid(format!(
                    "unexpected argument {arg:?} (flags start with --; see --help)"
                )));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if CARGO_FLAGS.contains(&name) {
                continue;
            }
            let source = format!("--{name}");
            if let Some(&n) = SWITCHES.iter().find(|&&s| s == name) {
                let value = inline.unwrap_or_else(|| "1".into());
                raw.insert(n, Raw { value, source });
            } else if let Some(&n) = VALUED.iter().find(|&&s| s == name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| Error::invalid(format!("{source} needs a value")))?,
                };
                raw.insert(n, Raw { value, source });
            } else {
                return Err(Error::invalid(format!(
                    "unknown flag --{name} (see --help)"
                )));
            }
        }
        let smoke = raw
            .get("smoke")
            .map(parse_bool)
            .transpose()?
            .unwrap_or(false);
        let mut o = SweepOptions::defaults(local_cores, smoke);
        for (&name, r) in &raw {
            match name {
                "nodes" => o.nodes = parse_counts(&r.value).map_err(|e| bad(r, &e))?,
                "cores" => o.cores = parse_counts(&r.value).map_err(|e| bad(r, &e))?,
                "algorithms" => {
                    o.algorithms = r
                        .value
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(parse_algorithm)
                        .collect::<Result<_>>()
                        .map_err(|e| match e {
                            // bad() says "invalid argument" already.
                            Error::InvalidArgument(msg) => bad(r, &msg),
                            e => bad(r, &e.to_string()),
                        })?;
                    if o.algorithms.is_empty() {
                        return Err(bad(r, "no algorithm given"));
                    }
                }
                "steps" => o.steps = parse_num(r, "expected a step count")?,
                "global-batch" => o.global_batch = parse_num(r, "expected a batch size")?,
                "synthetic" => o.synthetic = parse_num(r, "expected an image count")?,
                "data" => o.data = Some(PathBuf::from(&r.value)),
                "hostfile" => o.hostfile = Some(PathBuf::from(&r.value)),
                "oversubscribe" => o.oversubscribe = parse_bool(r)?,
                "seed" => o.seed = parse_num(r, "expected an unsigned integer")?,
                "timeout" => {
                    let s: f64 = parse_num(r, "expected seconds")?;
                    if !(s.is_finite() && s > 0.0) {
                        return Err(bad(r, "timeout must be > 0 s"));
                    }
                    o.timeout = Duration::from_secs_f64(s);
                }
                "smoke" => {}
                "bin" => o.bin = Some(PathBuf::from(&r.value)),
                "mpirun" => o.mpirun = PathBuf::from(&r.value),
                "mpirun-args" => {
                    o.mpirun_args = r.value.split_whitespace().map(String::from).collect()
                }
                "example-args" => {
                    o.example_args = r.value.split_whitespace().map(String::from).collect()
                }
                "out" => o.out = Some(PathBuf::from(&r.value)),
                "epoch-images" => o.epoch_images = parse_num(r, "expected an image count")?,
                "model-image-ms" => {
                    let ms: f64 = parse_num(r, "expected milliseconds")?;
                    if !(ms.is_finite() && ms > 0.0) {
                        return Err(bad(r, "must be > 0 ms"));
                    }
                    o.model.image_s = Some(ms * 1e-3);
                }
                "model-summary" => o.model_summary = Some(PathBuf::from(&r.value)),
                "model-cores" => o.model.cores = Some(parse_num(r, "expected a core count")?),
                "model-alpha-us" => {
                    let us: f64 = parse_num(r, "expected microseconds")?;
                    if !(us.is_finite() && us >= 0.0) {
                        return Err(bad(r, "must be >= 0 us"));
                    }
                    o.model.alpha_s = us * 1e-6;
                }
                "model-payload" => {
                    let f: f64 = parse_num(r, "expected a fraction")?;
                    if !(f > 0.0 && f <= 1.0) {
                        return Err(bad(r, "must be in (0, 1]"));
                    }
                    o.model.payload_fraction = f;
                }
                "model-max-nodes" => o.model.max_nodes = parse_num(r, "expected a node count")?,
                "model-bcast" => {
                    o.model.broadcast = match r.value.trim() {
                        "sequential" | "seq" => Broadcast::Sequential,
                        "tree" | "binomial" => Broadcast::BinomialTree,
                        _ => return Err(bad(r, "expected sequential or tree")),
                    }
                }
                "help" => o.help = parse_bool(r)?,
                _ => unreachable!("flag {name} is listed but not handled"),
            }
        }
        for (name, v) in [
            ("steps", o.steps),
            ("global-batch", o.global_batch),
            ("synthetic", o.synthetic),
            ("epoch-images", o.epoch_images),
            ("model-max-nodes", o.model.max_nodes),
        ] {
            if v == 0 {
                let source = raw
                    .get(name)
                    .map_or(format!("--{name}"), |r| r.source.clone());
                return Err(Error::invalid(format!("{source} must be >= 1")));
            }
        }
        if let (Some(hf), false) = (&o.hostfile, raw.contains_key("nodes")) {
            o.nodes = (1..=hostfile_hosts(hf)?).collect();
        }
        if let Some(&p) = o.nodes.iter().find(|&&p| p > o.global_batch) {
            return Err(Error::invalid(format!(
                "{p} nodes exceed the global batch {}: some ranks would have no image",
                o.global_batch
            )));
        }
        Ok(o)
    }

    /// The sweep's run configurations (in [`plan_sweep`] order) and the
    /// `(nodes, cores)` pairs skipped for exceeding the core budget.
    pub fn run_configs(&self, local_cores: usize) -> (Vec<RunConfig>, Vec<(usize, usize)>) {
        let plan = plan_sweep(
            &self.algorithms,
            &self.nodes,
            &self.cores,
            self.core_budget(local_cores),
        );
        let data = match &self.data {
            Some(d) => DataSource::Cifar10(d.clone()),
            None => DataSource::Synthetic(self.synthetic),
        };
        let configs = plan
            .configs
            .iter()
            .map(|&(algorithm, nodes, cores_per_rank)| RunConfig {
                algorithm,
                nodes,
                cores_per_rank,
                steps: self.steps,
                global_batch: self.global_batch,
                data: data.clone(),
                seed: self.seed,
            })
            .collect();
        (configs, plan.skipped)
    }

    /// The core budget of the plan: this machine's cores, unless running on a
    /// cluster or `--oversubscribe` was given.
    pub fn core_budget(&self, local_cores: usize) -> Option<usize> {
        if self.hostfile.is_some() || self.oversubscribe {
            None
        } else {
            Some(local_cores.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<SweepOptions> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SweepOptions::parse(
            args.iter().map(|s| s.to_string()),
            |k| env.get(k).cloned(),
            2,
        )
    }

    #[test]
    fn defaults_on_two_cores() {
        let o = parse(&["--bench"], &[]).unwrap();
        assert_eq!(o.nodes, vec![1, 2]);
        assert_eq!(o.cores, vec![1, 2]);
        assert_eq!(o.algorithms, Algorithm::ALL.to_vec());
        assert_eq!((o.steps, o.global_batch, o.synthetic), (12, 64, 1024));
        assert_eq!(o.core_budget(2), Some(2));
        assert!(!o.smoke && !o.help);
        let (configs, skipped) = o.run_configs(2);
        assert_eq!(configs.len(), 9);
        assert_eq!(skipped, vec![(2, 2)]);
        assert_eq!(configs[0].data, DataSource::Synthetic(1024));
        assert_eq!(
            (
                configs[8].algorithm,
                configs[8].nodes,
                configs[8].cores_per_rank
            ),
            (Algorithm::Naive, 2, 1)
        );
        let big = SweepOptions::defaults(16, false);
        assert_eq!(big.nodes, vec![1, 2, 3, 4]);
    }

    #[test]
    fn flags_override_env_and_env_overrides_defaults() {
        let o = parse(
            &[
                "--nodes",
                "1..4",
                "--cores=2",
                "--algorithms",
                "ring,naive",
                "--model-image-ms",
                "40",
                "--oversubscribe",
            ],
            &[
                ("RINGSGD_NODES", "1..=3"),
                ("RINGSGD_STEPS", "20"),
                ("RINGSGD_MODEL_BCAST", "tree"),
                ("RINGSGD_MPIRUN_ARGS", "--mca btl tcp,self"),
                ("RINGSGD_EXAMPLE_ARGS", "--bucket-kb 0  --wire bf16"),
            ],
        )
        .unwrap();
        assert_eq!(o.nodes, vec![1, 2, 3, 4]);
        assert_eq!(o.cores, vec![2]);
        assert_eq!(o.algorithms, vec![Algorithm::Ring, Algorithm::Naive]);
        assert_eq!(o.steps, 20);
        assert_eq!(o.model.image_s, Some(0.04));
        assert_eq!(o.model.broadcast, Broadcast::BinomialTree);
        assert_eq!(o.mpirun_args, vec!["--mca", "btl", "tcp,self"]);
        assert_eq!(o.example_args, vec!["--bucket-kb", "0", "--wire", "bf16"]);
        assert!(o.oversubscribe);
        assert_eq!(o.core_budget(2), None);
    }

    #[test]
    fn smoke_sets_tiny_defaults_but_flags_still_win() {
        let o = parse(&["--smoke"], &[]).unwrap();
        assert_eq!((o.nodes, o.cores), (vec![1, 2], vec![1]));
        assert_eq!((o.steps, o.global_batch, o.synthetic), (4, 8, 64));
        assert_eq!(o.timeout, Duration::from_secs(120));
        let o = parse(&["--smoke", "--steps", "6"], &[]).unwrap();
        assert_eq!((o.steps, o.global_batch), (6, 8));
        let e = parse(&[], &[("RINGSGD_SMOKE", "1")]).unwrap();
        assert!(e.smoke);
        let off = parse(&[], &[("RINGSGD_SMOKE", "0")]).unwrap();
        assert!(!off.smoke);
    }

    #[test]
    fn errors_name_the_flag_or_variable() {
        let msg = |a: &[&str], e: &[(&str, &str)]| parse(a, e).unwrap_err().to_string();
        assert!(msg(&["--nodse", "2"], &[]).contains("unknown flag --nodse"));
        assert!(msg(&["--nodes"], &[]).contains("--nodes needs a value"));
        assert!(msg(&["--nodes", "0..2"], &[]).contains("--nodes"));
        assert!(msg(&[], &[("RINGSGD_CORES", "two")]).contains("RINGSGD_CORES"));
        let m = msg(&["--algorithms", "ring,tree"], &[]);
        assert!(
            m.contains("\"tree\"") && m.matches("invalid argument").count() == 1,
            "{m}"
        );
        assert!(msg(&["--steps", "0"], &[]).contains("--steps must be >= 1"));
        assert!(msg(&["--model-payload", "1.5"], &[]).contains("--model-payload"));
        assert!(msg(&["--global-batch", "2", "--nodes", "1..3"], &[]).contains("3 nodes"));
        assert!(msg(&["filter"], &[]).contains("unexpected argument"));
        assert!(msg(&["--timeout", "-1"], &[]).contains("--timeout"));
    }

    #[test]
    fn counts_parse() {
        assert_eq!(parse_counts("2").unwrap(), vec![2]);
        assert_eq!(parse_counts("1..=3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_counts("1..3,8").unwrap(), vec![1, 2, 3, 8]);
        assert!(parse_counts("3..1").is_err());
        assert!(parse_counts("").is_err());
        assert!(parse_counts("a").is_err());
    }

    #[test]
    fn hostfile_sets_default_nodes() {
        let dir = std::env::temp_dir().join(format!("ringsgd-hostfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hf = dir.join("pi4");
        std::fs::write(
            &hf,
            "# pis\npi1 slots=4\npi2 slots=4\n\npi3 slots=4 # last\n",
        )
        .unwrap();
        let o = parse(&["--hostfile", hf.to_str().unwrap()], &[]).unwrap();
        assert_eq!(o.nodes, vec![1, 2, 3]);
        assert_eq!(o.core_budget(2), None);
        let o = parse(&["--hostfile", hf.to_str().unwrap(), "--nodes", "2"], &[]).unwrap();
        assert_eq!(o.nodes, vec![2]);
        std::fs::write(&hf, "# nothing\n").unwrap();
        let err = parse(&["--hostfile", hf.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no hosts"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
