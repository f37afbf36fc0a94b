//! SGD with momentum, coupled weight decay and optional Nesterov, with
//! PyTorch's semantics (`torch.optim.SGD`, dampening 0).

use crate::parallel::ComputePool;
use crate::{Error, Result};

/// Hyper-parameters of [`Sgd`]. The learning rate is not one of them: it is
/// passed to each step, so that a schedule can vary it (the trainer's base
/// rate is [`TrainConfig::base_lr`](crate::trainer::TrainConfig::base_lr)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor in `[0, 1)`; 0 disables momentum.
    pub momentum: f32,
    /// L2 weight decay added to the gradient (`g += wd * p`), >= 0.
    pub weight_decay: f32,
    /// Nesterov momentum (needs `momentum > 0`).
    pub nesterov: bool,
}

impl SgdConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(Error::invalid(format!(
                "momentum must be in [0, 1) (got {})",
                self.momentum
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "weight_decay must be finite and >= 0 (got {})",
                self.weight_decay
            )));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::invalid("nesterov needs momentum > 0"));
        }
        Ok(())
    }
}

/// SGD over a flat parameter buffer.
///
/// Per element, with `g` the gradient and `p` the parameter:
///
/// ```text
/// g   = g + weight_decay * p
/// buf = g                       (first step)
/// buf = momentum * buf + g      (later steps)
/// d   = g + momentum * buf      (nesterov)   or   d = buf
/// p   = p - lr * d
/// ```
///
/// ```
/// use ringsgd::optim::{Sgd, SgdConfig};
/// let cfg = SgdConfig { momentum: 0.9, weight_decay: 0.0, nesterov: false };
/// let mut sgd = Sgd::new(cfg, 2)?;
/// let mut p = [1.0f32, 2.0];
/// sgd.step(&mut p, &[1.0, -1.0], 0.1)?;
/// assert_eq!(p, [0.9, 2.1]);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    n: usize,
    buf: Vec<f32>,
    /// Whether `buf` holds a momentum (false before the first step).
    has_buf: bool,
}

impl Sgd {
    /// An optimiser for `num_params` parameters (config validated).
    pub fn new(config: SgdConfig, num_params: usize) -> Result<Sgd> {
        config.validate()?;
        Ok(Sgd {
            config,
            n: num_params,
            buf: vec![0.0; if config.momentum > 0.0 { num_params } else { 0 }],
            has_buf: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// One step with learning rate `lr` (e.g. from an [`LrSchedule`](super::LrSchedule)).
    /// `params` and `grads` must have the optimiser's length.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
        let n = self.num_params_checked(params.len(), "params")?;
        self.num_params_checked(grads.len(), "grads")?;
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::invalid(format!(
                "lr must be finite and >= 0 (got {lr})"
            )));
        }
        let first = !self.has_buf;
        if self.config.momentum == 0.0 {
            update(&self.config, params, grads, None, first, lr);
        } else {
            update(
                &self.config,
                params,
                grads,
                Some(&mut self.buf[..n]),
                first,
                lr,
            );
            self.has_buf = true;
        }
        Ok(())
    }

    /// [`step`](Self::step) split over a compute pool (elementwise, so the
    /// result is bitwise the same as `step` for any core count).
    pub fn step_in(
        &mut self,
        pool: &ComputePool,
        params: &mut [f32],
        grads: &[f32],
        lr: f32,
    ) -> Result<()> {
        if pool.cores() == 1 {
            return self.step(params, grads, lr);
        }
        self.num_params_checked(params.len(), "params")?;
        self.num_params_checked(grads.len(), "grads")?;
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::invalid(format!(
                "lr must be finite and >= 0 (got {lr})"
            )));
        }
        const CHUNK: usize = 1 << 15;
        let cfg = self.config;
        let first = !self.has_buf;
        if cfg.momentum == 0.0 {
            pool.for_each_chunk_mut(params, CHUNK, |i, p| {
                update(
                    &cfg,
                    p,
                    &grads[i * CHUNK..i * CHUNK + p.len()],
                    None,
                    first,
                    lr,
                )
            });
        } else {
            pool.for_each_chunk_mut2(params, CHUNK, &mut self.buf, CHUNK, |i, p, b| {
                update(
                    &cfg,
                    p,
                    &grads[i * CHUNK..i * CHUNK + p.len()],
                    Some(b),
                    first,
                    lr,
                )
            });
            self.has_buf = true;
        }
        Ok(())
    }

    fn num_params_checked(&self, len: usize, what: &str) -> Result<usize> {
        let n = self.num_params();
        if len != n {
            return Err(Error::invalid(format!(
                "{what} has {len} elements, the optimiser was made for {n}"
            )));
        }
        Ok(n)
    }

    /// Number of parameters this optimiser was made for.
    pub fn num_params(&self) -> usize {
        self.n
    }

    /// The momentum buffer (empty when momentum is 0; meaningful only when
    /// [`has_momentum_buffer`](Self::has_momentum_buffer)).
    pub fn momentum_buffer(&self) -> &[f32] {
        &self.buf
    }

    /// Whether a momentum buffer exists (false before the first step, like
    /// PyTorch's missing `momentum_buffer` state). Checkpoint it with the
    /// buffer: restoring with [`set_momentum_buffer`](Self::set_momentum_buffer)
    /// sets it, [`reset_momentum`](Self::reset_momentum) clears it.
    pub fn has_momentum_buffer(&self) -> bool {
        self.has_buf
    }

    /// Restores the momentum buffer (from a checkpoint); the next step then
    /// continues from it instead of starting a new one.
    pub fn set_momentum_buffer(&mut self, buf: &[f32]) -> Result<()> {
        if self.config.momentum == 0.0 {
            return Err(Error::invalid("momentum buffer given but momentum is 0"));
        }
        if buf.len() != self.buf.len() {
            return Err(Error::invalid(format!(
                "momentum buffer has {} elements, the optimiser was made for {}",
                buf.len(),
                self.buf.len()
            )));
        }
        self.buf.copy_from_slice(buf);
        self.has_buf = true;
        Ok(())
    }

    /// Forgets the momentum: the next step starts it afresh (`buf = g`).
    pub fn reset_momentum(&mut self) {
        self.buf.fill(0.0);
        self.has_buf = false;
    }
}

/// The update of one slice (see [`Sgd`]); `buf` is `None` without momentum.
fn update(
    cfg: &SgdConfig,
    params: &mut [f32],
    grads: &[f32],
    buf: Option<&mut [f32]>,
    first: bool,
    lr: f32,
) {
    let (mu, wd) = (cfg.momentum, cfg.weight_decay);
    match buf {
        None => {
            for (p, &g) in params.iter_mut().zip(grads) {
                *p -= lr * (g + wd * *p);
            }
        }
        Some(buf) => {
            for ((p, &g), b) in params.iter_mut().zip(grads).zip(buf.iter_mut()) {
                let g = g + wd * *p;
                *b = if first { g } else { mu * *b + g };
                let d = if cfg.nesterov { g + mu * *b } else { *b };
                *p -= lr * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(momentum: f32, weight_decay: f32, nesterov: bool) -> SgdConfig {
        SgdConfig {
            momentum,
            weight_decay,
            nesterov,
        }
    }

    /// Reference values worked out by hand from torch.optim.SGD's update.
    #[test]
    fn matches_pytorch_semantics() {
        // momentum 0.9, wd 0.1, p = 1, g = 1 twice, lr 0.5:
        // step 1: g = 1.1, buf = 1.1, p = 1 - 0.55 = 0.45
        // step 2: g = 1 + 0.045 = 1.045, buf = 0.99 + 1.045 = 2.035, p = 0.45 - 1.0175
        let mut s = Sgd::new(cfg(0.9, 0.1, false), 1).unwrap();
        let mut p = [1.0f32];
        s.step(&mut p, &[1.0], 0.5).unwrap();
        assert!((p[0] - 0.45).abs() < 1e-6);
        s.step(&mut p, &[1.0], 0.5).unwrap();
        assert!((p[0] - (0.45 - 1.0175)).abs() < 1e-6, "{}", p[0]);
        // nesterov: step 1: g = 1, buf = 1, d = 1 + 0.9 = 1.9, p = 1 - 0.19
        let mut s = Sgd::new(cfg(0.9, 0.0, true), 1).unwrap();
        let mut p = [1.0f32];
        s.step(&mut p, &[1.0], 0.1).unwrap();
        assert!((p[0] - 0.81).abs() < 1e-6);
        // plain SGD with decay
        let mut s = Sgd::new(cfg(0.0, 0.5, false), 1).unwrap();
        let mut p = [2.0f32];
        s.step(&mut p, &[1.0], 0.1).unwrap();
        assert!((p[0] - 1.8).abs() < 1e-6);
    }

    #[test]
    fn pooled_step_is_bitwise_the_plain_step() {
        let n = 100_000;
        let g: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
        for c in [cfg(0.9, 5e-4, true), cfg(0.0, 1e-3, false)] {
            let mut a = Sgd::new(c, n).unwrap();
            let mut b = Sgd::new(c, n).unwrap();
            let mut pa: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            let mut pb = pa.clone();
            let pool = ComputePool::new(3).unwrap();
            for _ in 0..2 {
                a.step(&mut pa, &g, 0.1).unwrap();
                b.step_in(&pool, &mut pb, &g, 0.1).unwrap();
            }
            assert_eq!(pa, pb);
            assert_eq!(a.momentum_buffer(), b.momentum_buffer());
        }
    }

    #[test]
    fn momentum_state_round_trips() {
        let mut a = Sgd::new(cfg(0.9, 0.0, false), 3).unwrap();
        let mut pa = [1.0f32, 2.0, 3.0];
        a.step(&mut pa, &[0.1, 0.2, 0.3], 0.1).unwrap();
        let mut b = Sgd::new(cfg(0.9, 0.0, false), 3).unwrap();
        assert!(!b.has_momentum_buffer());
        b.set_momentum_buffer(a.momentum_buffer()).unwrap();
        let mut pb = pa;
        a.step(&mut pa, &[0.5, 0.5, 0.5], 0.1).unwrap();
        b.step(&mut pb, &[0.5, 0.5, 0.5], 0.1).unwrap();
        assert_eq!(pa, pb);
        b.reset_momentum();
        assert!(!b.has_momentum_buffer());
    }

    #[test]
    fn errors_name_the_field() {
        for (c, field) in [
            (cfg(1.0, 0.0, false), "momentum"),
            (cfg(0.9, -1.0, false), "weight_decay"),
            (cfg(0.0, 0.0, true), "nesterov"),
        ] {
            let e = Sgd::new(c, 1).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        let mut s = Sgd::new(cfg(0.9, 0.0, false), 2).unwrap();
        assert!(s
            .step(&mut [0.0; 3], &[0.0; 2], 0.1)
            .unwrap_err()
            .to_string()
            .contains("params"));
        assert!(s
            .step(&mut [0.0; 2], &[0.0; 1], 0.1)
            .unwrap_err()
            .to_string()
            .contains("grads"));
        assert!(s.set_momentum_buffer(&[0.0]).is_err());
    }
}
