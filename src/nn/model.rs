//! The model: a sequence of layers over one flat parameter buffer and one
//! flat gradient buffer, with the workspaces that make a warm training step
//! allocation-free.

use super::layers::{init_bound, BatchBackward, BatchForward, Batched};
use super::loss::{check_labels, softmax_xent, BatchStats};
use super::op::Op;
use super::plan::{ModelPlan, ModelSpec};
use super::scratch::Slots;
use super::stack::{self, StackLayout};
use super::workspace::Workspace;
pub use crate::model::{GradSink, TensorInfo};
use crate::parallel::ComputePool;
use crate::{Error, Result};
use ndarray::{ArrayView2, ArrayView4};
use rand::SeedableRng;
use std::time::Instant;

/// The whole-batch passes of an op after the stack (every such op has
/// them: [`ModelSpec::plan`] refuses a spec where one does not).
fn batched(op: &Op) -> &dyn Batched {
    op.layer
        .batched()
        .expect("the plan checked that every op after the stack is batched")
}

/// Buffers sized for a batch; they only grow (see [`Workspace`]).
#[derive(Debug, Default)]
struct Buffers {
    batch: usize,
    /// Copy of the input when the caller's array is not contiguous.
    input: Vec<f32>,
    /// Output of each op from the stack's last op on (the per-image ops
    /// before it keep theirs in `stack`; see [`stack`]).
    acts: Vec<Vec<f32>>,
    /// Activations and max-pooling argmaxes of the stack, chunk-major.
    stack: Vec<f32>,
    stack_arg: Vec<u32>,
    /// Ping-pong gradient buffers for the backward pass of the batched ops
    /// (the linear layers).
    grad: [Vec<f32>; 2],
    /// Per-chunk partial gradients of the stack's convolutions.
    partials: Vec<f32>,
    /// d(loss)/d(input) of the last backward, when kept
    /// ([`Model::set_input_grad`]).
    dinput: Vec<f32>,
    /// Values of `dinput` the last backward wrote (0: none).
    dinput_len: usize,
    /// Transposed products of the linear layers.
    tmp: Vec<f32>,
    slots: Slots,
    /// Seconds spent in each op's forward and backward in the last call.
    times: Vec<[f64; 2]>,
}

/// A CNN: layers, parameters, gradients and workspaces.
///
/// All parameters live in one contiguous `f32` buffer ([`params`](Self::params))
/// and all gradients in another ([`grads`](Self::grads)), laid out as
/// described by [`tensors`](Self::tensors), so an allreduce runs over one
/// slice with no copy.
///
/// ```
/// use ringsgd::{nn::Model, parallel::ComputePool};
/// let pool = ComputePool::new(1)?;
/// let mut model = Model::from_spec("conv3x3(4,p1) relu maxpool2 flatten linear(3)", [1, 4, 4], 7)?;
/// model.params_mut().fill(0.0); // all logits 0: a uniform guess
/// let x = ndarray::Array4::<f32>::ones((2, 1, 4, 4));
/// let stats = model.train_step(&pool, x.view(), &[0, 2])?;
/// assert_eq!(stats.count, 2);
/// assert!((stats.mean_loss() - 3f64.ln()).abs() < 1e-6);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Debug)]
pub struct Model {
    spec: String,
    input_chw: [usize; 3],
    num_classes: usize,
    ops: Vec<Op>,
    /// The per-image ops before the first linear layer, run depth-first.
    layout: StackLayout,
    tensors: Vec<TensorInfo>,
    params: Vec<f32>,
    grads: Vec<f32>,
    buf: Buffers,
    /// Whether [`Self::backward`] should also compute the input gradient
    /// (kept in `buf.dinput`, see [`Model::set_input_grad`]).
    want_input_grad: bool,
}

/// Timing of one executed op (see [`Model::last_profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OpProfile {
    /// Op name, e.g. `conv2+relu`, `maxpool1`, `fc1+relu`.
    pub name: String,
    /// Seconds of the forward pass over the whole batch.
    pub forward_s: f64,
    /// Seconds of the backward pass over the whole batch.
    pub backward_s: f64,
    /// Forward FLOPs per image (0 for pooling and ReLU).
    pub forward_flops: u64,
    /// Backward FLOPs per image: 2x forward (weight and input gradients),
    /// 1x for the first layer (no input gradient).
    pub backward_flops: u64,
}

impl Model {
    /// Parses `spec` (see [`spec`](super::spec)) and builds the model for
    /// inputs of shape `[channels, height, width]`; see
    /// [`ModelBuilder::build`](super::ModelBuilder::build) for the initialisation.
    pub fn from_spec(spec: &str, input_chw: [usize; 3], seed: u64) -> Result<Model> {
        Model::from_plan(ModelSpec::parse(spec, input_chw)?.plan()?, seed)
    }

    /// PiNet ([`PINET_SPEC`](super::PINET_SPEC)) for `[3, 32, 32]` inputs and
    /// 10 classes: 1,116,970 parameters.
    pub fn pinet(seed: u64) -> Result<Model> {
        Model::from_spec(super::PINET_SPEC, [3, 32, 32], seed)
    }

    /// Builds the planned model: checks that it can run (a [`ModelPlan`]
    /// describes even absurd sizes: they are refused here, naming the
    /// layer) and draws the parameters, layer by layer in tensor order,
    /// from `ChaCha8Rng::seed_from_u64(seed)` (see
    /// [`ModelBuilder::build`](super::ModelBuilder::build)). Plan first to
    /// check sizes or memory, then build from the same plan:
    ///
    /// ```
    /// use ringsgd::nn::{Model, ModelSpec};
    /// let plan = ModelSpec::parse("conv3x3(8,p1) relu flatten linear(10)", [3, 8, 8])?.plan()?;
    /// assert!(plan.memory(64, 2).total() < 64 << 20);
    /// let model = Model::from_plan(plan, 1)?;
    /// assert_eq!(model.num_params(), 8 * 27 + 8 + 512 * 10 + 10);
    /// # Ok::<(), ringsgd::Error>(())
    /// ```
    pub fn from_plan(plan: ModelPlan, seed: u64) -> Result<Model> {
        plan.check_buildable()?;
        let nparams = plan.num_params();
        let mut params = vec![0f32; nparams];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let tensors = &plan.tensors;
        let mut t0 = 0;
        for op in &plan.ops {
            let end = op.poff + op.plen;
            let n = tensors[t0..].iter().take_while(|t| t.offset < end).count();
            op.layer.init(&tensors[t0..t0 + n], &mut params, &mut rng);
            t0 += n;
        }
        let nops = plan.ops.len();
        Ok(Model {
            spec: plan.spec().to_string(),
            input_chw: plan.spec().input_chw(),
            num_classes: plan.num_classes(),
            layout: plan.layout,
            ops: plan.ops,
            tensors: plan.tensors,
            grads: vec![0f32; nparams],
            params,
            buf: Buffers {
                acts: (0..nops).map(|_| Vec::new()).collect(),
                times: vec![[0.0; 2]; nops],
                ..Buffers::default()
            },
            want_input_grad: false,
        })
    }

    /// Half-width of the uniform initialisation of a layer whose weight has
    /// the PyTorch `shape` (`[out, in, kh, kw]` or `[out, in]`):
    /// `1/sqrt(fan_in)`, `fan_in` being the product of all but the first
    /// dimension. Its weight and its bias are both drawn from `U(-b, b)`.
    ///
    /// ```
    /// use ringsgd::nn::Model;
    /// assert_eq!(Model::init_bound(&[256, 4096]), 1.0 / 64.0);
    /// assert_eq!(Model::init_bound(&[32, 3, 3, 3]), (1.0 / 27f64.sqrt()) as f32);
    /// ```
    pub fn init_bound(shape: &[usize]) -> f32 {
        init_bound(shape)
    }

    /// The canonical spec string (parses back to the same model).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Input shape `[channels, height, width]`.
    pub fn input_chw(&self) -> [usize; 3] {
        self.input_chw
    }

    /// Number of classes (size of the last layer's output).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of parameters (length of [`params`](Self::params)).
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// All parameters, flat (layout: [`tensors`](Self::tensors)).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// All parameters, flat and mutable (for the optimiser and broadcasts).
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// Gradients of the last [`train_step`](Self::train_step), same layout.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Gradients, mutable (the allreduce averages them in place).
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Parameters and gradients at once (optimiser step without a copy).
    pub fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.params, &mut self.grads)
    }

    /// Each parameter tensor's name, PyTorch shape and place in the buffers.
    ///
    /// Naming: the i-th convolution (1-based, in spec order) is `conv{i}`,
    /// the i-th linear layer `fc{i}`; each has `.weight` then `.bias`.
    /// Shapes are PyTorch's: conv weight `[out, in, kh, kw]`, bias `[out]`,
    /// linear weight `[out, in]`. So the flat buffer maps one-to-one onto the
    /// `state_dict` of a PyTorch module with attributes `conv1, conv2, ..,
    /// fc1, fc2, ..` (`nn.Conv2d` / `nn.Linear`), in the same order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Forward and backward on one batch: OVERWRITES [`grads`](Self::grads)
    /// with the gradient of the mean softmax cross-entropy over the batch.
    ///
    /// `input` is `[batch, C, H, W]` with `batch >= 1` and `[C, H, W]` equal
    /// to [`input_chw`](Self::input_chw); `labels` has one class index per
    /// image. Workspaces grow to the largest batch seen and are then reused.
    pub fn train_step(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        self.run_batch(pool, input, labels, Some(&mut |_, _| {}))
    }

    /// [`train_step`](Self::train_step) that hands each part of the
    /// gradient to `on_grads(offset, values)` as soon as backward has
    /// finished it, last layer first, in the order of
    /// [`grad_parts`](Self::grad_parts) (the parts tile
    /// [`grads`](Self::grads)). This is what lets a trainer reduce the
    /// last layers' gradients while backward is still working on the
    /// first ones. `on_grads` runs on a compute thread.
    pub fn train_step_with(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: &mut GradSink<'_>,
    ) -> Result<BatchStats> {
        self.run_batch(pool, input, labels, Some(on_grads))
    }

    /// The parts of the flat gradient in the order backward finishes them
    /// (see [`train_step_with`](Self::train_step_with)): each layer with
    /// parameters after the convolution stack on its own, last first, then
    /// the whole stack at once (its per-image chunks are summed at the
    /// end).
    pub fn grad_parts(&self) -> Vec<std::ops::Range<usize>> {
        let l = self.layout.len;
        let mut parts: Vec<std::ops::Range<usize>> = self.ops[l..]
            .iter()
            .rev()
            .filter(|op| op.plen > 0)
            .map(Op::params)
            .collect();
        parts.extend(self.stack_grad_range());
        parts
    }

    /// The span of the convolution stack's parameters, if it has any.
    fn stack_grad_range(&self) -> Option<std::ops::Range<usize>> {
        let stack = self.ops[..self.layout.len].iter().filter(|op| op.plen > 0);
        let lo = stack.clone().map(|op| op.poff).min()?;
        let hi = stack.map(|op| op.poff + op.plen).max()?;
        Some(lo..hi)
    }

    /// Forward only: loss and accuracy of a batch (gradients untouched).
    pub fn evaluate(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        self.run_batch(pool, input, labels, None)
    }

    /// Forward and loss on a labelled batch, then, when `train`, the
    /// gradient of the loss and the backward pass.
    fn run_batch(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: Option<&mut GradSink<'_>>,
    ) -> Result<BatchStats> {
        let batch = self.check_input(&input, Some(labels))?;
        self.prepare(pool, batch, &input);
        Ok(pool.install(|| {
            self.forward(pool, &input, batch);
            let stats = self.loss(labels, on_grads.is_some());
            if let Some(on_grads) = on_grads {
                self.backward(pool, &input, batch, on_grads);
            }
            stats
        }))
    }

    /// Forward only: the logits, `[batch, num_classes]` (a view into the
    /// model's buffers, valid until the next call).
    pub fn predict(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
    ) -> Result<ArrayView2<'_, f32>> {
        let batch = self.check_input(&input, None)?;
        self.prepare(pool, batch, &input);
        pool.install(|| self.forward(pool, &input, batch));
        let logits = &self.buf.acts[self.ops.len() - 1][..batch * self.num_classes];
        ArrayView2::from_shape((batch, self.num_classes), logits)
            .map_err(|e| Error::shape("logits", e.to_string()))
    }

    fn check_input(&self, input: &ArrayView4<'_, f32>, labels: Option<&[u8]>) -> Result<usize> {
        let (b, c, h, w) = input.dim();
        if [c, h, w] != self.input_chw {
            return Err(Error::shape(
                "input",
                format!(
                    "expected [batch, {}, {}, {}], got [{b}, {c}, {h}, {w}]",
                    self.input_chw[0], self.input_chw[1], self.input_chw[2]
                ),
            ));
        }
        if b == 0 {
            return Err(Error::shape(
                "input",
                "batch is empty (need at least one image)",
            ));
        }
        if let Some(labels) = labels {
            if labels.len() != b {
                return Err(Error::shape(
                    "labels",
                    format!("{} labels for a batch of {b} images", labels.len()),
                ));
            }
            check_labels(labels, self.num_classes)?;
        }
        Ok(b)
    }

    /// Grows the workspaces to `batch` and copies a non-contiguous input.
    fn prepare(&mut self, pool: &ComputePool, batch: usize, input: &ArrayView4<'_, f32>) {
        let buf = &mut self.buf;
        let ws = Workspace::for_batch(&self.ops, &self.layout, buf.batch.max(batch));
        if batch > buf.batch {
            // The batched ops (and the stack's last op, their input) keep
            // contiguous outputs; their gradients ping-pong in `grad`.
            for (k, op) in self.ops.iter().enumerate().skip(ws.first_contiguous) {
                buf.acts[k].resize(batch * op.out_size, 0.0);
            }
            for g in &mut buf.grad {
                g.resize(ws.grad, 0.0);
            }
            buf.tmp.resize(ws.tmp, 0.0);
            buf.stack.resize(ws.stack, 0.0);
            buf.stack_arg.resize(ws.stack_index, 0);
            buf.partials.resize(ws.partials, 0.0);
            buf.batch = batch;
        }
        let din = batch * self.ops[0].in_size;
        if self.want_input_grad && buf.dinput.len() < din {
            buf.dinput.resize(din, 0.0);
        }
        buf.slots.ensure(pool.cores(), ws.scratch);
        if input.as_slice().is_none() {
            buf.input.clear();
            buf.input.extend(input.iter().copied());
        }
    }

    /// Spreads the wall time of a stack pass over its ops in proportion to
    /// the thread time each took (exact with one core).
    fn stack_times(&mut self, dir: usize, wall: f64) {
        let n = self.layout.len;
        let times = &mut self.buf.times;
        for t in times.iter_mut().take(n) {
            t[dir] = 0.0;
        }
        self.buf.slots.take_times(&mut times[..n]);
        let total: f64 = times[..n].iter().map(|t| t[dir]).sum();
        for t in times.iter_mut().take(n) {
            t[dir] = if total > 0.0 {
                wall * t[dir] / total
            } else {
                0.0
            };
        }
    }

    fn forward(&mut self, pool: &ComputePool, input: &ArrayView4<'_, f32>, batch: usize) {
        let l = self.layout.len;
        if l > 0 {
            let t0 = Instant::now();
            let buf = &mut self.buf;
            let x0: &[f32] = input.as_slice().unwrap_or(&buf.input);
            let bufs = stack::StackBufs {
                stack: &mut buf.stack,
                argmax: &mut buf.stack_arg,
                last: &mut buf.acts[l - 1],
            };
            stack::forward(
                pool,
                &buf.slots,
                &self.layout,
                &self.ops,
                &self.params,
                x0,
                batch,
                bufs,
            );
            self.stack_times(0, t0.elapsed().as_secs_f64());
        }
        let buf = &mut self.buf;
        let x0: &[f32] = input.as_slice().unwrap_or(&buf.input);
        for (k, op) in self.ops.iter().enumerate().skip(l) {
            let t0 = Instant::now();
            let (before, after) = buf.acts.split_at_mut(k);
            let x = if k == 0 { x0 } else { &before[k - 1][..] };
            let x = &x[..batch * op.in_size];
            let y = &mut after[0][..batch * op.out_size];
            batched(op).forward(BatchForward {
                pool,
                slots: &buf.slots,
                batch,
                params: &self.params[op.params()],
                x,
                y,
                tmp: &mut buf.tmp,
            });
            buf.times[k][0] = t0.elapsed().as_secs_f64();
        }
    }

    /// Loss statistics; with `grad`, writes d(mean loss)/d(logits) into
    /// `buf.grad[0]`.
    fn loss(&mut self, labels: &[u8], grad: bool) -> BatchStats {
        let batch = labels.len();
        let n = batch * self.num_classes;
        let logits = &self.buf.acts[self.ops.len() - 1][..n];
        let d = grad.then(|| &mut self.buf.grad[0][..n]);
        softmax_xent(logits, labels, self.num_classes, d)
    }

    /// Backward from d(loss)/d(logits) in `buf.grad[0]`; writes every
    /// gradient in `self.grads`.
    fn backward(
        &mut self,
        pool: &ComputePool,
        input: &ArrayView4<'_, f32>,
        batch: usize,
        on_grads: &mut GradSink<'_>,
    ) {
        let l = self.layout.len;
        let want_input_grad = self.want_input_grad;
        let buf = &mut self.buf;
        buf.dinput_len = 0;
        let x0: &[f32] = input.as_slice().unwrap_or(&buf.input);
        let [g0, g1] = &mut buf.grad;
        let (mut dy_buf, mut dx_buf) = (g0, g1);
        for (k, op) in self.ops.iter().enumerate().skip(l).rev() {
            let t0 = Instant::now();
            let x = if k == 0 { x0 } else { &buf.acts[k - 1][..] };
            let x = &x[..batch * op.in_size];
            let y = &buf.acts[k][..batch * op.out_size];
            let dy = &mut dy_buf[..batch * op.out_size];
            let dx = (k > 0 || want_input_grad).then(|| &mut dx_buf[..batch * op.in_size]);
            batched(op).backward(BatchBackward {
                pool,
                slots: &buf.slots,
                batch,
                params: &self.params[op.params()],
                grads: &mut self.grads[op.params()],
                x,
                y,
                dy,
                dx,
                tmp: &mut buf.tmp,
            });
            std::mem::swap(&mut dy_buf, &mut dx_buf);
            buf.times[k][1] = t0.elapsed().as_secs_f64();
            if op.plen > 0 {
                on_grads(op.poff, &self.grads[op.params()]);
            }
        }
        if l == 0 && want_input_grad {
            let n = batch * self.ops[0].in_size;
            buf.dinput[..n].copy_from_slice(&dy_buf[..n]);
            buf.dinput_len = n;
        }
        if l == 0 {
            return;
        }
        let t0 = Instant::now();
        let inp = stack::BackwardIn {
            x0,
            stack: &buf.stack,
            argmax: &buf.stack_arg,
            last: &buf.acts[l - 1],
            dy: &dy_buf[..],
        };
        let dinput = want_input_grad.then_some(&mut buf.dinput[..]);
        if want_input_grad {
            buf.dinput_len = batch * self.ops[0].in_size;
        }
        stack::backward(
            pool,
            &buf.slots,
            &self.layout,
            &self.ops,
            &self.params,
            batch,
            inp,
            &mut buf.partials,
            dinput,
        );
        stack::reduce_partials(
            pool,
            &self.layout,
            &self.ops,
            batch,
            &mut buf.partials,
            &mut self.grads,
        );
        self.stack_times(1, t0.elapsed().as_secs_f64());
        if let Some(part) = self.stack_grad_range() {
            on_grads(part.start, &self.grads[part]);
        }
    }

    /// Forward FLOPs per image (2 x multiply-adds of conv and linear layers).
    pub fn forward_flops(&self) -> u64 {
        self.ops.iter().map(|op| op.layer.forward_flops()).sum()
    }

    /// Training-step FLOPs per image actually computed: forward, plus weight
    /// and input gradients (no input gradient for the first layer). The
    /// PyTorch reference script counts `3 x forward` instead.
    pub fn train_flops(&self) -> u64 {
        self.last_profile()
            .iter()
            .map(|p| p.forward_flops + p.backward_flops)
            .sum()
    }

    /// Per-op timings of the last [`train_step`](Self::train_step) (backward
    /// times are those of the last step that ran a backward pass). A ReLU
    /// fused into the layer before it shows as `conv2+relu`.
    pub fn last_profile(&self) -> Vec<OpProfile> {
        self.ops
            .iter()
            .zip(&self.buf.times)
            .enumerate()
            .map(|(k, (op, t))| {
                let flops = op.layer.forward_flops();
                OpProfile {
                    name: op.name.clone(),
                    forward_s: t[0],
                    backward_s: t[1],
                    forward_flops: flops,
                    backward_flops: if k == 0 { flops } else { 2 * flops },
                }
            })
            .collect()
    }

    /// Keeps d(loss)/d(input) after every backward ([`train_step`](Self::train_step),
    /// [`backward_from_logit_grads`](Self::backward_from_logit_grads)), for
    /// saliency maps, adversarial inputs or a model stacked in front of this
    /// one (see [`input_grad`](Self::input_grad)). Off by default: it costs
    /// an input-sized buffer and the first layer's input gradient.
    pub fn set_input_grad(&mut self, keep: bool) {
        self.want_input_grad = keep;
    }

    /// d(loss)/d(input) of the last backward, `[batch, C, H, W]` flat, when
    /// [`set_input_grad`](Self::set_input_grad) is on (`None` otherwise, or
    /// before the first backward).
    pub fn input_grad(&self) -> Option<&[f32]> {
        (self.buf.dinput_len > 0).then(|| &self.buf.dinput[..self.buf.dinput_len])
    }

    /// Forward, then backward from `dlogits`, a given d(loss)/d(logits)
    /// (`[batch, num_classes]` flat), instead of the cross-entropy's: the
    /// gradients of any loss of the logits (compute `dlogits` from the
    /// logits of [`predict`](Self::predict) on the same input).
    /// OVERWRITES [`grads`](Self::grads).
    ///
    /// ```
    /// use ringsgd::nn::Model;
    /// use ringsgd::parallel::ComputePool;
    /// let pool = ComputePool::new(1)?;
    /// let mut m = Model::from_spec("flatten linear(2)", [1, 1, 3], 0)?;
    /// m.set_input_grad(true);
    /// let x = ndarray::Array4::from_shape_vec((1, 1, 1, 3), vec![1.0, 2.0, 3.0]).unwrap();
    /// // loss = logit 0: d/d(weights of output 0) = x, d/d(input) = row 0 of W.
    /// m.backward_from_logit_grads(&pool, x.view(), &[1.0, 0.0])?;
    /// assert_eq!(&m.grads()[..3], &[1.0, 2.0, 3.0]);
    /// let w0 = m.params()[..3].to_vec();
    /// assert_eq!(m.input_grad().unwrap(), &w0[..]);
    /// # Ok::<(), ringsgd::Error>(())
    /// ```
    pub fn backward_from_logit_grads(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        dlogits: &[f32],
    ) -> Result<()> {
        let batch = self.check_input(&input, None)?;
        let n = batch * self.num_classes;
        if dlogits.len() != n {
            return Err(Error::shape(
                "dlogits",
                format!(
                    "{} values for a batch of {batch} x {} classes",
                    dlogits.len(),
                    self.num_classes
                ),
            ));
        }
        self.prepare(pool, batch, &input);
        pool.install(|| {
            self.forward(pool, &input, batch);
            self.buf.grad[0][..n].copy_from_slice(dlogits);
            self.backward(pool, &input, batch, &mut |_, _| {});
        });
        Ok(())
    }
}
