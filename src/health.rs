//! What the node is doing: CPU temperature and clock from Linux's sysfs.
//!
//! A Raspberry Pi without a heatsink throttles from 1.8 to 1.0 GHz, and a
//! weak power supply caps its clock; with equal batch shares every step
//! then waits for that Pi. The trainer samples each rank's node with a
//! [`HealthProbe`] while it trains (at most once a second) and the epoch
//! report names, per rank, the temperature and the clock
//! ([`NodeHealth`]), with a warning when a rank ran below its maximum
//! clock.
//!
//! Read, where Linux exposes them (absent files are simply not reported):
//! * `/sys/class/thermal/thermal_zone*/temp` (millidegrees Celsius): the
//!   hottest zone;
//! * `/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq` and
//!   `cpuinfo_max_freq` (kHz): the fastest core's current clock (the busy
//!   one: idle cores may clock down without any throttling) and the
//!   highest maximum;
//! * `/sys/devices/platform/soc/soc:firmware/get_throttled` (Raspberry Pi
//!   firmware, hexadecimal): under-voltage and throttling flags.
//!
//! ```
//! use ringsgd::health::HealthProbe;
//! // A fake sysfs: one thermal zone at 61.5 °C, one core at 1.5 of 1.8 GHz.
//! let root = std::env::temp_dir().join(format!("ringsgd-doc-health-{}", std::process::id()));
//! let zone = root.join("sys/class/thermal/thermal_zone0");
//! let cpu = root.join("sys/devices/system/cpu/cpu0/cpufreq");
//! std::fs::create_dir_all(&zone).unwrap();
//! std::fs::create_dir_all(&cpu).unwrap();
//! std::fs::write(zone.join("temp"), "61500\n").unwrap();
//! std::fs::write(cpu.join("scaling_cur_freq"), "1500000\n").unwrap();
//! std::fs::write(cpu.join("cpuinfo_max_freq"), "1800000\n").unwrap();
//! let s = HealthProbe::with_root(&root).sample();
//! assert_eq!((s.temp_c, s.cur_mhz, s.max_mhz), (Some(61.5), Some(1500.0), Some(1800.0)));
//! assert_eq!(s.throttled, None);
//! std::fs::remove_dir_all(&root).unwrap();
//! ```

use std::path::{Path, PathBuf};

/// Reads the temperature and clock of this node from a sysfs tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthProbe {
    root: PathBuf,
}

impl Default for HealthProbe {
    fn default() -> Self {
        HealthProbe::system()
    }
}

/// One reading of a node (`None`: not exposed by this machine).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HealthSample {
    /// The hottest thermal zone, degrees Celsius.
    pub temp_c: Option<f32>,
    /// The fastest core's current clock, MHz.
    pub cur_mhz: Option<f32>,
    /// The highest maximum clock of the cores, MHz.
    pub max_mhz: Option<f32>,
    /// The Raspberry Pi firmware's throttling flags (`vcgencmd
    /// get_throttled`).
    pub throttled: Option<u32>,
}

impl HealthProbe {
    /// The machine's own sysfs (`/sys`).
    pub fn system() -> Self {
        HealthProbe::with_root(Path::new("/"))
    }

    /// A sysfs tree under `root` (`root/sys/class/thermal/...`): for tests,
    /// or a container that mounts the host's sysfs elsewhere.
    pub fn with_root(root: &Path) -> Self {
        HealthProbe {
            root: root.to_path_buf(),
        }
    }

    /// The root this probe reads under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the node now (a few small files; unreadable or malformed ones
    /// count as absent).
    pub fn sample(&self) -> HealthSample {
        let sys = self.root.join("sys");
        let temp_c = numbered(&sys.join("class/thermal"), "thermal_zone")
            .filter_map(|z| read_number(&z.join("temp")))
            .map(|m| (m / 1000.0) as f32)
            .reduce(f32::max);
        let cpus: Vec<PathBuf> = numbered(&sys.join("devices/system/cpu"), "cpu")
            .map(|c| c.join("cpufreq"))
            .collect();
        let khz = |file: &str| {
            cpus.iter()
                .filter_map(|c| read_number(&c.join(file)))
                .map(|k| (k / 1000.0) as f32)
                .reduce(f32::max)
        };
        let throttled =
            std::fs::read_to_string(sys.join("devices/platform/soc/soc:firmware/get_throttled"))
                .ok()
                .and_then(|s| {
                    let s = s.trim();
                    let hex = s.strip_prefix("0x").unwrap_or(s);
                    u32::from_str_radix(hex, 16).ok()
                });
        HealthSample {
            temp_c,
            cur_mhz: khz("scaling_cur_freq"),
            max_mhz: khz("cpuinfo_max_freq"),
            throttled,
        }
    }
}

/// The entries `prefix<N>` of `dir` (N decimal), in numeric order.
fn numbered(dir: &Path, prefix: &str) -> impl Iterator<Item = PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n: u32 = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p)
}

fn read_number(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// A node's temperature and clock over an epoch (what the epoch report
/// shows per rank).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeHealth {
    /// Highest temperature seen, degrees Celsius.
    pub temp_max_c: Option<f32>,
    /// Mean of the sampled clocks, MHz.
    pub mhz_mean: Option<f32>,
    /// Lowest sampled clock, MHz.
    pub mhz_min: Option<f32>,
    /// The maximum clock, MHz.
    pub max_mhz: Option<f32>,
    /// The firmware's throttling flags, OR-ed over the samples.
    pub throttled: Option<u32>,
    /// Samples taken.
    pub samples: u32,
}

/// A rank is reported as below its maximum clock when its mean clock over
/// the epoch is under this fraction of the maximum.
pub const BELOW_MAX_CLOCK: f32 = 0.9;

impl NodeHealth {
    /// Adds one sample.
    pub fn add(&mut self, s: &HealthSample) {
        let n = self.samples as f32;
        self.samples += 1;
        self.temp_max_c = max_opt(self.temp_max_c, s.temp_c);
        if let Some(c) = s.cur_mhz {
            self.mhz_mean = Some(match self.mhz_mean {
                Some(m) => m + (c - m) / (n + 1.0),
                None => c,
            });
            self.mhz_min = Some(self.mhz_min.map_or(c, |m| m.min(c)));
        }
        self.max_mhz = max_opt(self.max_mhz, s.max_mhz);
        if let Some(t) = s.throttled {
            self.throttled = Some(self.throttled.unwrap_or(0) | t);
        }
    }

    /// Whether anything was read.
    pub fn is_known(&self) -> bool {
        self.temp_max_c.is_some() || self.mhz_mean.is_some() || self.throttled.is_some()
    }

    /// Whether the rank ran below [`BELOW_MAX_CLOCK`] of its maximum clock
    /// on average, or the firmware reports throttling or under-voltage now
    /// or since boot.
    pub fn throttled(&self) -> bool {
        let slow = matches!((self.mhz_mean, self.max_mhz), (Some(c), Some(m)) if m > 0.0 && c < BELOW_MAX_CLOCK * m);
        slow || self.throttled.is_some_and(|f| f != 0)
    }

    /// The firmware flags in words (Raspberry Pi `get_throttled` bits).
    pub fn flag_words(&self) -> Vec<&'static str> {
        const BITS: [(u32, &str); 8] = [
            (0x1, "under-voltage now"),
            (0x2, "clock capped now"),
            (0x4, "throttled now"),
            (0x8, "soft temperature limit now"),
            (0x1_0000, "under-voltage since boot"),
            (0x2_0000, "clock capped since boot"),
            (0x4_0000, "throttled since boot"),
            (0x8_0000, "soft temperature limit since boot"),
        ];
        let f = self.throttled.unwrap_or(0);
        BITS.iter()
            .filter(|(b, _)| f & b != 0)
            .map(|&(_, w)| w)
            .collect()
    }

    /// The fields as `f32`s (NaN: absent) for the trainer's gather, and
    /// back.
    pub(crate) fn to_array(self) -> [f32; 6] {
        let o = |v: Option<f32>| v.unwrap_or(f32::NAN);
        [
            o(self.temp_max_c),
            o(self.mhz_mean),
            o(self.mhz_min),
            o(self.max_mhz),
            // The flags fit in 20 bits: exact in an f32.
            self.throttled.map_or(f32::NAN, |t| t as f32),
            self.samples as f32,
        ]
    }

    pub(crate) fn from_array(a: &[f32]) -> NodeHealth {
        let o = |v: f32| (!v.is_nan()).then_some(v);
        NodeHealth {
            temp_max_c: o(a[0]),
            mhz_mean: o(a[1]),
            mhz_min: o(a[2]),
            max_mhz: o(a[3]),
            throttled: o(a[4]).map(|t| t as u32),
            samples: a[5] as u32,
        }
    }
}

fn max_opt(a: Option<f32>, b: Option<f32>) -> Option<f32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "ringsgd-health-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn nothing_exposed_reads_as_nothing() {
        let root = fake(&[]);
        let s = HealthProbe::with_root(&root).sample();
        assert_eq!(s, HealthSample::default());
        let mut h = NodeHealth::default();
        h.add(&s);
        assert!(!h.is_known() && !h.throttled());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_throttled_pi() {
        let cpu = |n: usize, f: &str| format!("sys/devices/system/cpu/cpu{n}/cpufreq/{f}");
        let (c0, c1, c2, c3) = (
            cpu(0, "scaling_cur_freq"),
            cpu(1, "scaling_cur_freq"),
            cpu(0, "cpuinfo_max_freq"),
            cpu(1, "cpuinfo_max_freq"),
        );
        let root = fake(&[
            ("sys/class/thermal/thermal_zone0/temp", "82300\n"),
            ("sys/class/thermal/thermal_zone1/temp", "garbage"),
            ("sys/class/thermal/thermal_zone10/temp", "40000"),
            (&c0, "1000000\n"),
            (&c1, "600000\n"),
            (&c2, "1800000\n"),
            (&c3, "1800000\n"),
            // Not a cpu: ignored.
            (
                "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq",
                "1",
            ),
            (
                "sys/devices/platform/soc/soc:firmware/get_throttled",
                "0x50005\n",
            ),
        ]);
        let s = HealthProbe::with_root(&root).sample();
        assert_eq!(s.temp_c, Some(82.3));
        assert_eq!((s.cur_mhz, s.max_mhz), (Some(1000.0), Some(1800.0)));
        assert_eq!(s.throttled, Some(0x50005));
        let mut h = NodeHealth::default();
        h.add(&s);
        h.add(&HealthSample {
            cur_mhz: Some(1400.0),
            temp_c: Some(70.0),
            ..s
        });
        assert_eq!(
            (h.mhz_mean, h.mhz_min, h.temp_max_c),
            (Some(1200.0), Some(1000.0), Some(82.3))
        );
        assert!(h.throttled());
        assert_eq!(
            h.flag_words(),
            [
                "under-voltage now",
                "throttled now",
                "under-voltage since boot",
                "throttled since boot"
            ]
        );
        assert_eq!(NodeHealth::from_array(&h.to_array()), h);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn full_clock_is_not_throttling() {
        let mut h = NodeHealth::default();
        h.add(&HealthSample {
            cur_mhz: Some(1800.0),
            max_mhz: Some(1800.0),
            throttled: Some(0),
            temp_c: None,
        });
        assert!(h.is_known() && !h.throttled());
        assert_eq!(NodeHealth::from_array(&h.to_array()), h);
    }
}
