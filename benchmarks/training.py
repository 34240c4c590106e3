"""Benchmark of training: images/s streaming from shards against `model.fit` on the same examples in memory.

    .venv/bin/python benchmarks/training.py [--examples 8192] [--rounds 5] [--threads N] [--workdir DIR]

Writes brick cutout files of random pixels (64x64x6 float32, realfake.testing.mock_cutout_file) and
builds shards of 512 from them (realfake.shards.build.build), then trains the configured network
(config/config.yaml: model, batch size, shuffle buffer, determinism) in two ways:
  memory     every training example loaded into one NumPy array, `model.fit(x, y, shuffle=True)`
  streaming  realfake.training.data.train_stream, as the rule trains: shards read by interleaved readers,
             shuffle buffer, prefetch (`model.fit(stream, steps_per_epoch=...)`)
Throughput: one child process trains one model, alternating one epoch (one `model.fit`) of each
mode (ABBA...) for --rounds rounds, so that other load on the machine hits both alike; each mode's
first epoch (tracing) is not counted, nor the first batch of an epoch (`fit`'s set-up: the copy of
the arrays into TensorFlow, or filling the shuffle buffer, both paid once per epoch); images/s is
the median over the epochs (the best epoch is printed too). On a shared machine the wall-clock
rates move with the other load; the CPU time the process spends per image (all its threads,
`time.process_time`) moves much less, and its ratio is the throughput ratio on an idle machine
where training keeps every core busy. Memory: each mode then runs alone in a child process for
at most 100 batches, and its peak RSS is read from wait4().
Goal (issue 7): streaming >= 0.95 x memory; streaming's memory bounded by the shuffle buffer,
not by the data.

FLOP/s: the network's forward FLOPs per example are counted layer by layer (a multiply-add is
2 FLOPs; convolutions and dense layers, pooling adds); training costs ~3x the forward pass
(forward, then gradients with respect to activations and to weights). The CPU's peak is
cores x clock x FP32 FLOPs per cycle per core, from lscpu: the clock is "CPU max MHz" when lscpu
gives it, else the "cpu MHz" of /proc/cpuinfo (in a VM, the nominal clock: turbo may be higher, so
the % of peak is then an upper bound); FLOPs per cycle from the widest vector unit in the flags,
assuming two FMA pipes: AVX-512 2 x 16 x 2 = 64, AVX2+FMA 2 x 8 x 2 = 32, AVX 16, SSE 8 (with one
512-bit FMA pipe, e.g. some Xeon Silver, or Zen 4's double-pumped AVX-512: half that). The
reference: ~45 images/s on a 68-core KNL node (1.4 GHz, two AVX-512 FMA pipes per core: 6.1 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
REF_IMAGES_PER_S, REF_CORES, REF_GHZ, REF_FLOPS_PER_CYCLE = 45.0, 68, 1.4, 64

MAKE_SHARDS = "import sys; from realfake.testing import mock_shards; mock_shards(sys.argv[1], int(sys.argv[2]))"


def child(mode: str, shards: str, rounds: int, threads: int, max_steps: int = 0) -> dict:
    """In this (child) process: ``mode`` "both" alternates epochs of the two modes; otherwise one mode alone."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    tcfg = cfg["train"]
    from realfake.training.runtime import configure_threads

    configure_threads(threads, tcfg.get("inter_op_threads", 2))
    import keras
    import numpy as np
    import tensorflow as tf

    from realfake.training.data import train_stream
    from realfake.training.model import FakeAUC, build_model
    from realfake.shards.shardset import ShardSet

    keras.utils.set_random_seed(tcfg["seed"])
    if tcfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    summary = json.loads((Path(shards) / "summary.json").read_text())
    train = ShardSet.read(shards, "train")
    shape, batch = train.example_shape, tcfg["batch_size"]
    model = build_model(cfg["model"], shape, summary["channels"], summary["normalisation"])
    model.compile(keras.optimizers.Adam(tcfg["learning_rate"]), "sparse_categorical_crossentropy",
                  metrics=["accuracy", FakeAUC(name="auc")])
    steps, n = train.batches(batch), train.n_examples
    x = y = None
    if mode in ("both", "memory"):
        x = np.concatenate([np.load(xp, allow_pickle=False) for xp in train.x])
        y = np.concatenate([np.load(yp, allow_pickle=False) for yp in train.y]).astype(np.int32)

    class Clock(keras.callbacks.Callback):
        """Seconds from the end of an epoch's first batch to the end of its last one."""

        def on_train_batch_end(self, b, logs=None):
            if b == 0:
                self.t0, self.c0 = time.perf_counter(), time.process_time()
            self.t1, self.c1 = time.perf_counter(), time.process_time()

    def epoch(which, k):
        clock = Clock()
        if which == "memory":
            if max_steps:
                model.fit(x[: max_steps * batch], y[: max_steps * batch], batch_size=batch, verbose=0)
            else:
                model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, callbacks=[clock], verbose=0)
        else:
            ds = train_stream(train, batch, k, k + 1, shuffle_buffer=tcfg["shuffle_buffer"],
                              seed=tcfg["seed"])
            model.fit(ds, steps_per_epoch=min(steps, max_steps or steps), epochs=1, callbacks=[clock], verbose=0)
        return (clock.t1 - clock.t0, clock.c1 - clock.c0) if not max_steps else None

    if mode != "both":
        epoch(mode, 0)
        return {}
    times = {"memory": [], "streaming": []}
    for r in range(rounds + 1):
        for which in ("memory", "streaming") if r % 2 == 0 else ("streaming", "memory"):
            times[which].append(epoch(which, r))
    return {"n": n, "times": times, "forward_flops": forward_flops(model)}


def forward_flops(model) -> int:
    """Forward FLOPs per example: 2 per multiply-add of convolutions and dense layers; one per pooled input."""
    from keras import layers

    total = 0
    for layer in model.layers:
        out = layer.output.shape
        if isinstance(layer, layers.Conv2D):
            cin = layer.input.shape[-1]
            total += 2 * out[1] * out[2] * out[3] * layer.kernel_size[0] * layer.kernel_size[1] * cin
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
        elif isinstance(layer, (layers.AveragePooling2D, layers.MaxPooling2D)):
            total += out[1] * out[2] * out[3] * layer.pool_size[0] * layer.pool_size[1]
    return int(total)


def cpu_peak(cores: int) -> tuple[float, str]:
    """Peak FP32 FLOP/s of ``cores`` cores and how it was estimated."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    field = dict(re.findall(r"^([^:]+):\s*(.*)$", text, re.M))
    flags = set(field.get("Flags", "").split())
    if field.get("CPU max MHz"):
        mhz, source = float(field["CPU max MHz"]), "lscpu CPU max MHz"
    else:
        m = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
        mhz, source = (float(m.group(1)), "/proc/cpuinfo cpu MHz") if m else (float(field.get("BogoMIPS", 0)) / 2,
                                                                               "BogoMIPS / 2")
    if "avx512f" in flags:
        per_cycle, unit = 64, "AVX-512: 2 FMA x 16 fp32 x 2"
    elif {"avx2", "fma"} <= flags:
        per_cycle, unit = 32, "AVX2: 2 FMA x 8 fp32 x 2"
    elif "avx" in flags:
        per_cycle, unit = 16, "AVX: 8 add + 8 mul"
    else:
        per_cycle, unit = 8, "SSE: 4 add + 4 mul"
    peak = cores * mhz * 1e6 * per_cycle
    how = (f"{field.get('Model name', '?')}: {cores} cores x {mhz / 1000:.2f} GHz ({source}) x {per_cycle} "
           f"FLOP/cycle ({unit})")
    return peak, how


def run_child(mode, shards, rounds, threads, max_steps=0):
    cmd = [sys.executable, __file__, "--child", mode, "--shards", shards, "--rounds", str(rounds),
           "--threads", str(threads), "--max-steps", str(max_steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{mode} child failed ({os.waitstatus_to_exitcode(status)})")
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=8192, help="training examples [%(default)s]")
    p.add_argument("--rounds", type=int, default=5, help="timed epochs of each mode [%(default)s]")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads [all usable cores]")
    p.add_argument("--workdir", default=None, help="folder for the shards [a temporary folder]")
    p.add_argument("--child", choices=["both", "memory", "streaming"], help=argparse.SUPPRESS)
    p.add_argument("--shards", help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.shards, a.rounds, a.threads, a.max_steps)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="realfake-bench-train-", dir=a.workdir))
    try:
        n_total = int(a.examples / 0.99) + 1
        subprocess.run([sys.executable, "-c", MAKE_SHARDS, str(work), str(n_total)], check=True,
                       stdout=subprocess.DEVNULL)
        shards = str(work / "shards")
        both = run_child("both", shards, a.rounds, a.threads)
        rss = {m: run_child(m, shards, 0, a.threads, max_steps=100)["rss_mb"] for m in ("memory", "streaming")}

        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        peak, how = cpu_peak(a.threads)
        fwd, n = both["forward_flops"], both["n"]
        train_flops = 3 * fwd
        data_mb = n * 64 * 64 * 6 * 4 / 2**20
        batch = cfg["train"]["batch_size"]
        rates = {m: [(n - batch) / t for t, _ in ts[1:]] for m, ts in both["times"].items()}
        # CPU seconds (all threads of the process) per 1000 images: what other load on the machine changes least
        cpu = {m: statistics.median(1000 * c / (n - batch) for _, c in ts[1:]) for m, ts in both["times"].items()}
        print(f"model {cfg['model']['name']}, batch {cfg['train']['batch_size']}, shuffle buffer "
              f"{cfg['train']['shuffle_buffer']}, deterministic {cfg['train']['deterministic']}; {n} training "
              f"examples ({data_mb:.0f} MB) in shards of 512; {a.threads} threads; {a.rounds} timed epochs per mode, "
              f"alternating")
        print(f"forward {fwd / 1e6:.1f} MFLOP/example, training ~3x = {train_flops / 1e6:.0f} MFLOP/example")
        print(f"peak {peak / 1e9:.0f} GFLOP/s = {how}")
        print()
        print(f"| {'mode':<27} | {'images/s':>8} | {'best epoch':>10} | {'CPU s/1000 img':>14} | "
              f"{'images/s/core':>13} | {'GFLOP/s':>7} | {'% of peak':>9} | {'peak RSS MB':>11} |")
        print(f"| {'-' * 27} | {'-' * 7}: | {'-' * 9}: | {'-' * 13}: | {'-' * 12}: | {'-' * 6}: | {'-' * 8}: | "
              f"{'-' * 10}: |")
        median = {}
        for mode, label in (("memory", "model.fit, in memory"), ("streaming", "model.fit, streaming shards")):
            median[mode] = statistics.median(rates[mode])
            flops = median[mode] * train_flops
            print(f"| {label:<27} | {median[mode]:>8.1f} | {max(rates[mode]):>10.1f} | {cpu[mode]:>14.2f} | "
                  f"{median[mode] / a.threads:>13.2f} | {flops / 1e9:>7.1f} | {100 * flops / peak:>8.1f}% | "
                  f"{rss[mode]:>11.0f} |")
        ref_peak = REF_CORES * REF_GHZ * 1e9 * REF_FLOPS_PER_CYCLE
        ref_flops = REF_IMAGES_PER_S * train_flops
        print(f"| {'reference, KNL, 68 cores':<27} | {REF_IMAGES_PER_S:>8.1f} | {'':>10} | {'':>14} | "
              f"{REF_IMAGES_PER_S / REF_CORES:>13.2f} | {ref_flops / 1e9:>7.1f} | "
              f"{100 * ref_flops / ref_peak:>8.2f}% | "
              f"{'':>11} |")
        print()
        ratio = median["streaming"] / median["memory"]
        print(f"streaming / in memory: {ratio:.3f} (medians; goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}), "
              f"best epochs {max(rates['streaming']) / max(rates['memory']):.3f}, "
              f"CPU time per image {cpu['memory'] / cpu['streaming']:.3f}")
        for m, rs in rates.items():
            print(f"  {m} images/s per epoch: " + ", ".join(f"{r:.0f}" for r in rs))
        print(f"per core, streaming: {median['streaming'] / a.threads / (REF_IMAGES_PER_S / REF_CORES):.0f} x the "
              f"reference's {REF_IMAGES_PER_S / REF_CORES:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
