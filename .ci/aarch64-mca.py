#!/usr/bin/env python3
"""Static throughput check of ringsgd's aarch64 kernels (run by .ci/aarch64-mca).

Reads the compiled aarch64 library (an .rlib: the release build's own object
code), finds each kernel's entry point by its symbol name (the kernels are
`#[inline(never)]` functions, see KERNELS), finds the function's innermost
loops by their back-edges (a branch to a lower address in the same
function), takes the innermost loop with the most floating-point work, and
runs llvm-mca on that loop body for each CPU model. Prints, per kernel and
CPU, cycles per iteration (llvm-mca's simulation, all loads hitting L1)
against the FP-pipe bound (the loop's FLOPs over the core's peak FLOPs per
cycle) and the fraction; exits 1 when a kernel that runs by default on
aarch64 is under the threshold on the gating model.

Nothing here is a copy of assembly: every number comes from the object code
the build just produced.
"""

import argparse
import re
import subprocess
import sys

# (name shown, demangled-symbol regex, FMLA per source step, runs by
# default on aarch64, i.e. in the `neon` family). The FMLA count is a
# cross-check that the loop found is the kernel's loop (its FMLA count must
# be a multiple). GEMM: the 8x8 tile (packed panels: conv layers on the
# GEMM path and fc layers' packed operands; A read in place along its rows:
# fc1's weights; any other strides). Direct convolution: the 6- and 4-row
# x 16-pixel tile, forward and input gradient (the NEON family dispatches
# the portable tile: it is at the bound). Weight gradient: 4 output channels
# x 3 taps over 8 pixels.
KERNELS = [
    ("gemm 8x8 packed (portable)", r"kernels::microkernel::portable_packed_8x8::h", 16, False),
    ("gemm 8x8 strided (portable)", r"kernels::microkernel::portable_strided_8x8::h", 16, False),
    ("dw 4x3 (portable)", r"kernels::direct::dw_portable::h", 24, False),
    ("gemm 8x8 packed (neon)", r"kernels::microkernel::neon::packed_8x8::h", 16, True),
    ("gemm 8x8 A cols, rsa=1 (neon)", r"kernels::microkernel::neon::cols_8x8::h", 16, True),
    ("gemm 8x8 A rows, csa=1 (neon)", r"kernels::microkernel::neon::rows_8x8::h", 16, True),
    ("gemm 8x8 other strides (neon, no layer)", r"kernels::microkernel::neon::strided_8x8::h", 16,
     False),
    ("direct 6x16 fwd/dx (portable = neon)", r"kernels::direct::portable_6x16::h", 24, True),
    ("direct 4x16 fwd/dx (portable = neon)", r"kernels::direct::portable_4x16::h", 16, True),
    ("dw 4x3 (neon; 4 of 8 lanes per pass)", r"kernels::direct::neon::dw_4x3_neon::h", 12, True),
]

# Peak f32 FLOPs per cycle and core, and why.
PEAK = {
    "a72": (8.0, "2 FP/ASIMD pipes (F0/F1), 64 bits wide for FP multiply-add: "
                 "a 128-bit FMLA holds one for 2 cycles (LLVM's model: 2.00 on W or X "
                 "per fmla .4s), so 1 x 4-lane FMLA/cycle = 8 FLOP/cycle"),
    "n1": (16.0, "2 ASIMD pipes (V0/V1), 128 bits wide: 2 x 4-lane FMLA/cycle "
                 "= 16 FLOP/cycle"),
}

FP_FLOPS_PER_LANE = {
    "fmla": 2, "fmls": 2, "fmadd": 2, "fmsub": 2, "fnmadd": 2, "fnmsub": 2,
    "fmul": 1, "fadd": 1, "fsub": 1, "fmax": 1, "fmin": 1, "fmaxnm": 1, "fminnm": 1,
    "fdiv": 1, "faddp": 1, "fabd": 1,
}
BRANCH = re.compile(r"^(b|b\.\w+|cbz|cbnz|tbz|tbnz)$")
TARGET = re.compile(r"0x([0-9a-f]+) <[^>]*>")
FUNC = re.compile(r"^[0-9a-f]+ <(.*)>:$")
INSN = re.compile(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$")


def demangle_legacy(name):
    """Enough of Rust's legacy mangling for matching (llvm-objdump -C leaves
    `$LT$`-style escapes in impl paths)."""
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","),
                 ("$RF$", "&"), ("$BP$", "*"), ("$u7b$", "{"), ("$u7d$", "}"),
                 ("..", "::")):
        name = name.replace(a, b)
    return name.lstrip("_")


def functions(dis):
    funcs, cur = {}, None
    for line in dis.splitlines():
        m = FUNC.match(line)
        if m:
            cur = demangle_legacy(m.group(1))
            funcs.setdefault(cur, [])
            continue
        m = INSN.match(line)
        if m and cur is not None:
            ops = m.group(3).split("//")[0].strip()
            funcs[cur].append((int(m.group(1), 16), m.group(2), ops))
    return funcs


def flops(mnem, ops):
    per = FP_FLOPS_PER_LANE.get(mnem)
    if per is None:
        return 0
    first = ops.split(",")[0].strip()
    if first.endswith(".4s"):
        lanes = 4
    elif first.endswith(".2s") or first.endswith(".2d"):
        lanes = 2
    elif re.match(r"^[sd]\d+$", first):
        lanes = 1
    else:
        return 0
    return per * lanes


def hot_loop(insns):
    """The innermost loop (back-edge) with the most FLOPs: (body, flops)."""
    loops = []
    for addr, mnem, ops in insns:
        if BRANCH.match(mnem):
            m = TARGET.search(ops)
            if m and int(m.group(1), 16) <= addr:
                loops.append((int(m.group(1), 16), addr))
    inner = [l for l in loops
             if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops)]
    best = None
    for lo, hi in inner:
        body = [i for i in insns if lo <= i[0] <= hi]
        f = sum(flops(m, o) for _, m, o in body)
        if best is None or f > best[1]:
            best = (body, f)
    return best


def to_asm(body):
    """The loop body as llvm-mca input: every branch target becomes the
    loop's own label (llvm-mca does not follow branches)."""
    out = [".Lloop:"]
    for _, mnem, ops in body:
        if BRANCH.match(mnem) or mnem == "bl":
            ops = TARGET.sub(".Lloop", ops)
        out.append(f"\t{mnem}\t{ops}")
    return "\n".join(out) + "\n"


def mca(tool, cpu, asm, iterations):
    r = subprocess.run([tool, "-mtriple=aarch64-linux-gnu", f"-mcpu={cpu}",
                        f"-iterations={iterations}"], input=asm, text=True,
                       capture_output=True)
    if r.returncode != 0:
        sys.exit(f"aarch64-mca: {tool} -mcpu={cpu} failed:\n{r.stderr}\n{asm}")
    total = int(re.search(r"Total Cycles:\s+(\d+)", r.stdout).group(1))
    return total / iterations

# --- PiNet throughput estimate from the analysis -----------------------------
# PiNet (src/nn/mod.rs PINET_SPEC) on 3x32x32 images, multiply-adds per image
# for forward, weight gradient (dw) and input gradient (dx), and the kernel
# that computes each (`direct N`: the direct tile over N output rows, split
# into 6- and 4-row panels as `direct::panel_rows` does; `dw`: the weight-
# gradient tile; gemm kernels by the operand layout the linear layer uses).
PINET = [
    ("conv1+relu", [(884_736, "direct", 32), (884_736, "dw", 0)]),
    ("conv2+relu", [(9_437_184, "direct", 32), (9_437_184, "dw", 0), (9_437_184, "direct", 32)]),
    ("conv3+relu", [(4_718_592, "direct", 64), (4_718_592, "dw", 0), (4_718_592, "direct", 32)]),
    ("conv4+relu", [(9_437_184, "direct", 64), (9_437_184, "dw", 0), (9_437_184, "direct", 64)]),
    # forward: W (row-major, csa = 1) read in place; dw: dy^T packed (N = 4096
    # > 256); dx: dy (row-major) read in place.
    ("fc1+relu", [(1_048_576, "rows", 0), (1_048_576, "packed", 0), (1_048_576, "rows", 0)]),
    ("fc2", [(2_560, "rows", 0), (2_560, "packed", 0), (2_560, "rows", 0)]),
]
EST_KERNEL = {
    "direct6": "direct 6x16 fwd/dx (portable = neon)",
    "direct4": "direct 4x16 fwd/dx (portable = neon)",
    "dw": "dw 4x3 (neon; 4 of 8 lanes per pass)",
    "rows": "gemm 8x8 A rows, csa=1 (neon)",
    "packed": "gemm 8x8 packed (neon)",
}
# Kernel-loop time over training-step time, measured on the AMD EPYC (AVX2)
# machine (README, "Measured: PiNet training step"): the step's own 151.4
# MFLOP per image at the AVX2 microkernel's 102 GFLOP/s alone take 1.48 ms;
# the 1-core step ran at 67.5 GFLOP/s counting 153.2 MFLOP (3 x forward):
# 2.27 ms. 1.48 / 2.27 = 0.65 covers tile overheads (zeroing, stores, bias
# and ReLU), packing, pooling, ReLU masks, the loss and the SGD update.
STEP_EFFICIENCY = 0.65
# 4 cores of one Pi against 1: 2-core scaling measured here was 1.85x (host
# quiet); the same loss per doubling gives 4 x (1.85 / 2)^2 = 3.42x.
CORES, SCALING = 4, 4 * (1.85 / 2) ** 2
BOARDS = [("Pi 4, 1.5 GHz (BCM2711 B0 boards)", "a72", 1.5),
          ("Pi 4, 1.8 GHz (C0 boards, Pi 400)", "a72", 1.8),
          ("Pi 5, 2.4 GHz", "n1", 2.4)]


def panels(n):
    """(rows in 6-row panels, rows in 4-row panels) as direct::panel_rows."""
    six = four = 0
    rem = n
    while rem > 0:
        even = rem + rem % 2
        mr = 6 if even % 6 == 0 else (4 if even in (2, 4, 8) else 6)
        rows = min(mr, rem)
        if mr == 6:
            six += rows
        else:
            four += rows
        rem -= rows
    return six, four


def estimate(frac_by_cpu):
    """Prints the per-layer cycles and the images/s estimate; `frac_by_cpu`
    maps a peak key ("a72", "n1") to {kernel name: fraction of bound}."""
    print("\nPiNet training step per image, ESTIMATE from the llvm-mca fractions above "
          "(not a measurement):")
    keys = list(frac_by_cpu)
    print("| layer | MFLOP/image (fwd + dw + dx) | " +
          " | ".join(f"kernel Mcycles ({k.upper()})" for k in keys) + " |")
    print("|---|--:|" + "--:|" * len(keys))
    total = {k: 0.0 for k in keys}
    total_fl = 0.0
    for layer, parts in PINET:
        fl_layer = 0.0
        cyc = {k: 0.0 for k in keys}
        for macs, kern, rows in parts:
            fl = 2.0 * macs
            fl_layer += fl
            if kern == "direct":
                six, four = panels(rows)
                split = [("direct6", six / rows), ("direct4", four / rows)]
            else:
                split = [(kern, 1.0)]
            for k in keys:
                peak = PEAK[k][0]
                for name, share in split:
                    cyc[k] += fl * share / (peak * frac_by_cpu[k][EST_KERNEL[name]])
        total_fl += fl_layer
        for k in keys:
            total[k] += cyc[k]
        print(f"| {layer} | {fl_layer / 1e6:.2f} | " +
              " | ".join(f"{cyc[k] / 1e6:.2f}" for k in keys) + " |")
    print(f"| step | {total_fl / 1e6:.1f} | " +
          " | ".join(f"{total[k] / 1e6:.2f}" for k in keys) + " |")
    print(f"\nallowances: step = kernel loops / {STEP_EFFICIENCY} (measured ratio on the AVX2 "
          f"machine); {CORES} cores = {SCALING:.2f} x 1 core (4 x (1.85/2)^2, from the "
          "2-core scaling measured there)")
    print("| board | kernel loops ms/image, 1 core | step ms/image, 1 core | "
          f"ms/image, {CORES} cores | images/s, {CORES} cores |")
    print("|---|--:|--:|--:|--:|")
    for board, k, ghz in BOARDS:
        if k not in total:
            continue
        kern_ms = total[k] / (ghz * 1e6)
        step_ms = kern_ms / STEP_EFFICIENCY
        node_ms = step_ms / SCALING
        print(f"| {board} | {kern_ms:.2f} | {step_ms:.2f} | {node_ms:.2f} | {1e3 / node_ms:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rlib")
    ap.add_argument("--objdump", default="llvm-objdump-19")
    ap.add_argument("--mca", default="llvm-mca-19")
    ap.add_argument("--cpu", action="append", required=True,
                    help="LABEL=MCPU=PEAKKEY, e.g. 'Pi 4 (Cortex-A72)=cortex-a72=a72'")
    ap.add_argument("--gate", default="cortex-a72", help="the -mcpu the threshold applies to")
    ap.add_argument("--min", type=float, default=0.85)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--show-asm", action="store_true")
    a = ap.parse_args()

    dis = subprocess.run([a.objdump, "-d", "-C", "--no-show-raw-insn", a.rlib],
                         text=True, capture_output=True, check=True).stdout
    funcs = functions(dis)
    cpus = [c.split("=") for c in a.cpu]
    failures, missing = [], []
    rows = {label: [] for label, _, _ in cpus}
    for name, pattern, fmla_per_step, default in KERNELS:
        syms = [f for f in funcs if re.search(pattern, f)]
        if not syms:
            missing.append((name, default))
            continue
        if len(syms) > 1:
            sys.exit(f"aarch64-mca: {name}: {len(syms)} functions match {pattern!r}: {syms}")
        loop = hot_loop(funcs[syms[0]])
        if loop is None or loop[1] == 0:
            sys.exit(f"aarch64-mca: {name}: no loop with floating-point work in {syms[0]}")
        body, fl = loop
        n_fmla = sum(1 for _, m, _ in body if m == "fmla")
        steps, rem = divmod(n_fmla, fmla_per_step)
        if rem or steps == 0:
            sys.exit(f"aarch64-mca: {name}: the hot loop has {n_fmla} fmla, not a multiple "
                     f"of the kernel's {fmla_per_step} per step: wrong loop?\n" + to_asm(body))
        asm = to_asm(body)
        if a.show_asm:
            print(f"# {name} ({syms[0]})\n{asm}")
        for label, cpu, key in cpus:
            peak, _ = PEAK[key]
            bound = fl / peak
            cyc = mca(a.mca, cpu, asm, a.iterations)
            frac = bound / cyc
            status = ""
            if cpu == a.gate:
                if not default:
                    status = "reference"
                elif frac < a.min:
                    status = f"UNDER {a.min:.0%}"
                    failures.append(f"{name} on {label}: {frac:.1%}")
                else:
                    status = "ok"
            rows[label].append((name, len(body), steps, n_fmla, fl, bound, cyc, frac, status))

    for label, cpu, key in cpus:
        peak, why = PEAK[key]
        print(f"\n{label}: llvm-mca -mcpu={cpu}, bound = FLOPs / {peak:g} FLOP/cycle ({why})")
        print(f"| kernel | insns/iter | k-steps/iter | fmla | FLOP/iter | bound cyc | "
              f"llvm-mca cyc | fraction |{' check |' if cpu == a.gate else ''}")
        print(f"|---|--:|--:|--:|--:|--:|--:|--:|{'---|' if cpu == a.gate else ''}")
        for name, ni, steps, nf, fl, bound, cyc, frac, status in rows[label]:
            tail = f" {status} |" if cpu == a.gate else ""
            print(f"| {name} | {ni} | {steps} | {nf} | {fl} | {bound:.2f} | {cyc:.2f} | "
                  f"{frac:.1%} |{tail}")
    fracs = {key: {r[0]: r[7] for r in rows[label]} for label, _, key in cpus}
    if all(all(n in f for n in EST_KERNEL.values()) for f in fracs.values()):
        estimate(fracs)
    for name, default in missing:
        print(f"\nnot in this build: {name}" + (" (a default kernel: FAIL)" if default else ""))
        if default:
            failures.append(f"{name}: entry point not found")
    if failures:
        print(f"\naarch64-mca: FAIL, under {a.min:.0%} of the FP-pipe bound on {a.gate} "
              "(or missing):\n  " + "\n  ".join(failures))
        return 1
    print(f"\naarch64-mca: ok, every default aarch64 kernel at >= {a.min:.0%} of the "
          f"FP-pipe bound on {a.gate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
