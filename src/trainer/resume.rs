//! Checkpoints of a trainer, and restoring one on every rank.
//!
//! Rank 0 writes checkpoints (it is the only rank guaranteed to see the head
//! node's file system) and, on resume, reads the file and broadcasts the
//! state to the other ranks, so nodes need no shared file system.
//!
//! The data order and the augmentation are counter-based functions of
//! `(seed, epoch, position in the epoch)`, so `(seed, epoch, step)` is the
//! whole random state of a run: a resumed run continues exactly, bitwise, and
//! does so with another world size too (the global batches are the same).

use log::info;

use crate::checkpoint::{Checkpoint, OptimizerState};
use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::model::Trainable;
use crate::optim::Sgd;
use crate::trainer::balance::{equal_shares, format_shares, parse_shares};
use crate::trainer::data_parallel::Trainer;

impl<M: Trainable> Trainer<'_, M> {
    /// The state of the run at this point, to be saved by rank 0.
    pub fn to_checkpoint(&self) -> Checkpoint {
        let cfg = self.config();
        let model = self.model();
        let sgd = self.optimizer();
        let [c, h, w] = model.input_shape();
        Checkpoint {
            model_spec: model.identity(),
            input_chw: [c as u32, h as u32, w as u32],
            params: model.params().to_vec(),
            optimizer: OptimizerState {
                lr: cfg.base_lr,
                momentum: cfg.sgd.momentum,
                dampening: 0.0,
                weight_decay: cfg.sgd.weight_decay,
                nesterov: cfg.sgd.nesterov,
                steps: self.global_step(),
                momentum_buffer: sgd
                    .has_momentum_buffer()
                    .then(|| sgd.momentum_buffer().to_vec()),
            },
            epoch: self.epoch(),
            step: self.global_step(),
            step_in_epoch: self.step_in_epoch(),
            seed: cfg.seed,
            world_size_at_save: self.comm().size() as u32,
            config: vec![
                ("global_batch".into(), cfg.global_batch.to_string()),
                ("augment".into(), cfg.augment_label()),
                ("schedule".into(), format!("{:?}", cfg.schedule)),
                ("allreduce".into(), cfg.algorithm.to_string()),
                // Where balancing had moved the batch shares: resumed as
                // they were (on the same world size), so that resume is
                // exact.
                ("shares".into(), format_shares(self.shares())),
            ],
            ..Default::default()
        }
    }

    /// Restores a checkpoint on every rank (collective).
    ///
    /// Rank 0 passes the result of loading the file (`Some`); other ranks pass
    /// `None`. Rank 0 checks the checkpoint against the model and the
    /// configuration and broadcasts the weights, the momentum and the step
    /// counters; when rank 0 fails (unreadable file, other model, other seed
    /// or global batch), every rank returns an error instead of waiting.
    pub fn restore_from_root(&mut self, loaded: Option<Result<Checkpoint>>) -> Result<()> {
        let comm = self.comm();
        let rank = comm.rank();
        // Header: status, epoch, step, momentum_initialized.
        let mut header = [0u8; 32];
        let mut root_error = None;
        let mut root_ckpt = None;
        if rank == 0 {
            let checked = match loaded {
                Some(Ok(c)) => self.check(&c).map(|_| c),
                Some(Err(e)) => Err(e),
                None => Err(Error::invalid(
                    "rank 0 must be given the checkpoint to restore",
                )),
            };
            match checked {
                Ok(c) => {
                    header[0] = 1;
                    header[8..16].copy_from_slice(&c.epoch.to_le_bytes());
                    header[16..24].copy_from_slice(&c.step.to_le_bytes());
                    header[24] = c.optimizer.momentum_buffer.is_some() as u8;
                    root_ckpt = Some(c);
                }
                Err(e) => root_error = Some(e),
            }
        }
        comm.broadcast(0, &mut header)?;
        // The batch shares (balance): the checkpoint's on the same world
        // size and global batch, equal otherwise.
        let (size, gb) = (comm.size(), self.config().global_batch);
        let saved = root_ckpt.as_ref().and_then(|c| {
            c.config
                .iter()
                .find(|(k, _)| k == "shares")
                .and_then(|(_, v)| parse_shares(v, size, gb))
        });
        let mut shares: Vec<f32> = saved
            .unwrap_or_else(|| equal_shares(gb, size))
            .iter()
            .map(|&s| s as f32)
            .collect();
        if header[0] == 1 {
            comm.broadcast(0, &mut shares)?;
        }
        if header[0] != 1 {
            return Err(root_error.unwrap_or_else(|| {
                Error::invalid("rank 0 could not restore the checkpoint (see rank 0's error)")
            }));
        }
        let epoch = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let step = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let initialized = header[24] == 1;
        let (comm, model, sgd) = self.parts_mut();
        let mut momentum = sgd.momentum_buffer().to_vec();
        if let Some(c) = root_ckpt {
            // Lengths were checked against this model by `check`.
            model.params_mut().copy_from_slice(&c.params);
            if let Some(buf) = &c.optimizer.momentum_buffer {
                momentum.copy_from_slice(buf);
            }
        }
        comm.broadcast(0, model.params_mut())?;
        comm.broadcast(0, &mut momentum)?;
        restore_momentum(sgd, &momentum, initialized)?;
        self.set_position(epoch, step);
        self.set_shares(shares.iter().map(|&s| s as usize).collect());
        info!("rank {rank}: resumed at epoch {epoch}, step {step}");
        Ok(())
    }

    /// Rank 0's check that a checkpoint belongs to this run.
    fn check(&self, c: &Checkpoint) -> Result<()> {
        let model = self.model();
        let bad =
            |msg: String| Error::invalid(format!("cannot resume from this checkpoint: {msg}"));
        if c.model_spec != model.identity() {
            return Err(bad(format!(
                "it holds model '{}', this run builds '{}'",
                c.model_spec,
                model.identity()
            )));
        }
        let momentum_len = self.optimizer().momentum_buffer().len();
        let saved_momentum = c
            .optimizer
            .momentum_buffer
            .as_ref()
            .map_or(momentum_len, Vec::len);
        if c.params.len() != model.num_params() || saved_momentum != momentum_len {
            return Err(bad(format!(
                "it holds {} parameters and {} momentum values, this run has {} and {}",
                c.params.len(),
                saved_momentum,
                model.num_params(),
                momentum_len
            )));
        }
        let cfg = self.config();
        if c.seed != cfg.seed {
            return Err(bad(format!(
                "it was trained with seed {}, this run has --seed {}",
                c.seed, cfg.seed
            )));
        }
        let saved_batch = c
            .config
            .iter()
            .find(|(k, _)| k == "global_batch")
            .map(|(_, v)| v.as_str());
        if saved_batch != Some(cfg.global_batch.to_string().as_str()) {
            return Err(bad(format!(
                "it was trained with global batch {}, this run has --global-batch {}",
                saved_batch.unwrap_or("?"),
                cfg.global_batch
            )));
        }
        // A resume continues the same run: other optimiser settings would
        // make it neither the saved run nor a fresh one.
        let o = &c.optimizer;
        let settings = [
            (
                "learning rate (--lr)",
                o.lr.to_string(),
                cfg.base_lr.to_string(),
            ),
            (
                "momentum (--momentum)",
                o.momentum.to_string(),
                cfg.sgd.momentum.to_string(),
            ),
            (
                "weight decay (--weight-decay)",
                o.weight_decay.to_string(),
                cfg.sgd.weight_decay.to_string(),
            ),
            (
                "Nesterov (--nesterov)",
                o.nesterov.to_string(),
                cfg.sgd.nesterov.to_string(),
            ),
        ];
        let saved = |key: &str| {
            c.config
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let recorded = [
            (
                "schedule (--schedule, --warmup-steps, --step-*)",
                "schedule",
                format!("{:?}", cfg.schedule),
            ),
            (
                "augmentation (--no-augment)",
                "augment",
                cfg.augment_label(),
            ),
        ];
        let differing = settings
            .into_iter()
            .chain(
                recorded
                    .into_iter()
                    .filter_map(|(what, key, now)| saved(key).map(|was| (what, was, now))),
            )
            .filter(|(_, was, now)| was != now)
            .map(|(what, was, now)| format!("{what} {was} in the checkpoint, {now} in this run"))
            .collect::<Vec<_>>();
        if !differing.is_empty() {
            return Err(bad(format!(
                "it was trained with other settings: {}; a resume continues the same run \
                 (start afresh with --overwrite to change them)",
                differing.join("; ")
            )));
        }
        Ok(())
    }
}

/// Puts a saved momentum buffer (or its absence) into the optimiser.
fn restore_momentum(sgd: &mut Sgd, momentum: &[f32], initialized: bool) -> Result<()> {
    if initialized {
        sgd.set_momentum_buffer(momentum)
    } else {
        sgd.reset_momentum();
        Ok(())
    }
}
