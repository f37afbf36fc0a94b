//! Learning-rate schedules, indexed by optimiser step (0-based).

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// How the learning rate evolves with the step count.
///
/// ```
/// use ringsgd::optim::LrSchedule;
/// let s: LrSchedule = "cosine(10,110)".parse()?;
/// assert_eq!(s.lr(0.1, 9), 0.1);              // end of the warm-up
/// assert!((s.lr(0.1, 60) - 0.05).abs() < 1e-6); // half-way down
/// assert_eq!(s.lr(0.1, 1000), 0.0);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `base_lr` at every step.
    Constant,
    /// `base_lr * gamma^(step / every_steps)`.
    Step {
        /// Steps between decays (>= 1).
        every_steps: u64,
        /// Factor per decay, in `(0, 1]`.
        gamma: f32,
    },
    /// Linear warm-up over `warmup_steps` (step `s` gets
    /// `base_lr * (s+1) / warmup_steps`), then cosine decay from `base_lr`
    /// to 0 at `total_steps`, and 0 after.
    Cosine {
        /// Warm-up steps (may be 0).
        warmup_steps: u64,
        /// Total steps (> `warmup_steps`).
        total_steps: u64,
    },
}

impl LrSchedule {
    /// Checks the parameters; the error names the field.
    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every_steps, gamma } => {
                if every_steps == 0 {
                    return Err(Error::invalid("step schedule: every_steps must be >= 1"));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(Error::invalid(format!(
                        "step schedule: gamma must be in (0, 1] (got {gamma})"
                    )));
                }
                Ok(())
            }
            LrSchedule::Cosine {
                warmup_steps,
                total_steps,
            } => {
                if total_steps <= warmup_steps {
                    return Err(Error::invalid(format!(
                        "cosine schedule: total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The learning rate at `step` (0-based) for base rate `base_lr`.
    pub fn lr(&self, base_lr: f32, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { every_steps, gamma } => {
                let k = step / every_steps.max(1);
                (base_lr as f64 * (gamma as f64).powf(k as f64)) as f32
            }
            LrSchedule::Cosine {
                warmup_steps,
                total_steps,
            } => {
                if step < warmup_steps {
                    return (base_lr as f64 * (step + 1) as f64 / warmup_steps as f64) as f32;
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let t = ((step - warmup_steps) as f64 / span).min(1.0);
                (base_lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Step { every_steps, gamma } => write!(f, "step({every_steps},{gamma})"),
            LrSchedule::Cosine {
                warmup_steps,
                total_steps,
            } => write!(f, "cosine({warmup_steps},{total_steps})"),
        }
    }
}

/// Parses `constant`, `step(EVERY,GAMMA)` or `cosine(WARMUP,TOTAL)` (what
/// `Display` writes) and validates it.
impl FromStr for LrSchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<LrSchedule> {
        let bad = || {
            Error::invalid(format!(
                "lr schedule `{s}`: expected constant, step(EVERY,GAMMA) or cosine(WARMUP,TOTAL)"
            ))
        };
        let s = s.trim();
        let (name, args) = match s.split_once('(') {
            Some((n, rest)) => (n, Some(rest.strip_suffix(')').ok_or_else(bad)?)),
            None => (s, None),
        };
        let two = |a: Option<&str>| -> Result<(String, String)> {
            let (x, y) = a.and_then(|a| a.split_once(',')).ok_or_else(bad)?;
            Ok((x.trim().to_string(), y.trim().to_string()))
        };
        let sched = match (name, args) {
            ("constant", None) => LrSchedule::Constant,
            ("step", a) => {
                let (x, y) = two(a)?;
                LrSchedule::Step {
                    every_steps: x.parse().map_err(|_| bad())?,
                    gamma: y.parse().map_err(|_| bad())?,
                }
            }
            ("cosine", a) => {
                let (x, y) = two(a)?;
                LrSchedule::Cosine {
                    warmup_steps: x.parse().map_err(|_| bad())?,
                    total_steps: y.parse().map_err(|_| bad())?,
                }
            }
            _ => return Err(bad()),
        };
        sched.validate()?;
        Ok(sched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant.lr(0.3, 99), 0.3);
        let s = LrSchedule::Step {
            every_steps: 10,
            gamma: 0.5,
        };
        assert_eq!(
            (s.lr(1.0, 9), s.lr(1.0, 10), s.lr(1.0, 25)),
            (1.0, 0.5, 0.25)
        );
        let c = LrSchedule::Cosine {
            warmup_steps: 4,
            total_steps: 14,
        };
        assert_eq!(c.lr(1.0, 0), 0.25);
        assert_eq!(c.lr(1.0, 3), 1.0);
        assert_eq!(c.lr(1.0, 4), 1.0);
        assert!((c.lr(1.0, 9) - 0.5).abs() < 1e-6);
        assert!(c.lr(1.0, 14).abs() < 1e-7);
        let c0 = LrSchedule::Cosine {
            warmup_steps: 0,
            total_steps: 2,
        };
        assert_eq!(c0.lr(2.0, 0), 2.0);
    }

    #[test]
    fn parse_round_trip_and_errors() {
        for s in ["constant", "step(100,0.1)", "cosine(5,500)"] {
            assert_eq!(s.parse::<LrSchedule>().unwrap().to_string(), s);
        }
        for s in [
            "cosine",
            "step(0,0.1)",
            "cosine(5,5)",
            "linear",
            "step(1,2)",
        ] {
            assert!(s.parse::<LrSchedule>().is_err(), "{s}");
        }
    }
}
