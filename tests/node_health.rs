//! Temperatures and clocks in the epoch report, from fake sysfs trees: a
//! throttled rank is named on every rank, a healthy one is not, a machine
//! that exposes nothing reports nothing; the cifar10 example prints the
//! per-rank line and the warning.

mod common;

use std::path::{Path, PathBuf};

use ringsgd::comm::local::run_ranks;
use ringsgd::data::{synthetic, Normalizer};
use ringsgd::health::HealthProbe;
use ringsgd::nn::Model;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{TrainConfig, Trainer};

/// A sysfs tree with one zone at `temp_mc` and 4 cores at `cur_khz` of
/// 1.8 GHz, and the Pi firmware's flags.
fn fake_pi(dir: &Path, temp_mc: u32, cur_khz: u32, flags: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let zone = dir.join("sys/class/thermal/thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("temp"), format!("{temp_mc}\n")).unwrap();
    for c in 0..4 {
        let f = dir.join(format!("sys/devices/system/cpu/cpu{c}/cpufreq"));
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("scaling_cur_freq"), format!("{cur_khz}\n")).unwrap();
        std::fs::write(f.join("cpuinfo_max_freq"), "1800000\n").unwrap();
    }
    let fw = dir.join("sys/devices/platform/soc/soc:firmware");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("get_throttled"), flags).unwrap();
    dir.to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringsgd-health-{name}-{}", std::process::id()))
}

#[test]
fn a_throttled_rank_is_named_on_every_rank() {
    let cool = fake_pi(&scratch("cool"), 48_000, 1_800_000, "0x0\n");
    let hot = fake_pi(&scratch("hot"), 84_500, 1_000_000, "0xe0008\n");
    let empty = scratch("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let roots = [cool.clone(), hot.clone(), empty.clone()];
    let train = synthetic::generate(192, 1);
    let norm = Normalizer::from_dataset(&train).unwrap();
    let reports = run_ranks(3, |comm| {
        let model = Model::from_spec(
            "conv3x3(4,p1) relu maxpool2 flatten linear(10)",
            [3, 32, 32],
            1,
        )?;
        let mut cfg = TrainConfig::pinet_defaults(48, 1);
        cfg.augment = None;
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, model, cfg)?;
        use ringsgd::comm::Transport;
        t.set_health_probe(HealthProbe::with_root(&roots[comm.rank()]));
        t.train_epoch(&train, &norm, &mut |_| {})
    })
    .unwrap();
    for r in &reports {
        assert_eq!(r.ranks, reports[0].ranks, "every rank reports the same");
    }
    let ranks = &reports[0].ranks;
    assert_eq!(ranks.len(), 3);
    assert_eq!(ranks[0].health.temp_max_c, Some(48.0));
    assert_eq!(ranks[0].health.mhz_mean, Some(1800.0));
    assert!(ranks[0].throttle_warning().is_none(), "{:?}", ranks[0]);
    let w = ranks[1].throttle_warning().expect("rank 1 is throttled");
    assert!(w.starts_with("rank 1 (local) is throttled"), "{w}");
    assert!(
        w.contains("1000 MHz") && w.contains("1800 MHz") && w.contains("84.5 °C"),
        "{w}"
    );
    assert!(
        w.contains("throttled since boot") && w.contains("soft temperature limit now"),
        "{w}"
    );
    assert!(!ranks[2].health.is_known(), "{:?}", ranks[2]);
    assert!(ranks[2].throttle_warning().is_none());
    for r in ranks {
        assert!(r.compute > 0.0, "{r:?}");
    }
    for d in [cool, hot, empty] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_cifar10_example_prints_ranks_and_the_warning() {
    let dir = scratch("cli");
    let root = fake_pi(&dir.join("sys-root"), 81_000, 1_200_000, "0x4\n");
    let mut cmd = common::with_timeout(180);
    cmd.arg(common::example("cifar10"))
        .args(["--synthetic", "256", "--local-ranks", "2", "--cores", "1"])
        .args(["--global-batch", "64", "--epochs", "1", "--no-eval"])
        .args(["--model", "conv3x3(4,p1) relu maxpool2 flatten linear(10)"])
        .env("RINGSGD_SYSFS_ROOT", &root)
        .env("RUST_LOG", "warn");
    let out = cmd.output().expect("start the example");
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ranks = stdout
        .lines()
        .find(|l| l.starts_with("  ranks: "))
        .unwrap_or_else(|| panic!("no ranks line:\n{text}"));
    assert!(
        ranks.contains("0 (local) compute") && ranks.contains("| 1 (local)"),
        "{ranks}"
    );
    assert!(ranks.contains("81.0°C 1200/1800 MHz"), "{ranks}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning: rank 1 (local) is throttled")
                && l.contains("firmware: throttled now")),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
