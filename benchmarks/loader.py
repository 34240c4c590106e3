"""Benchmark of the training loader alone: images/s per core of realfake.training.data's training stream, no model.

    .venv/bin/python benchmarks/loader.py [--examples 8192] [--epochs 3] [--cores 1 2] [--batches 256 32]
                                          [--cold-rounds 2] [--no-bytes] [--workdir DIR]

Writes brick cutout files of random pixels (64x64x6 float32, realfake.testing.mock_cutout_file) and builds
shards of 512 from them (realfake.shards.build.build), then measures, side by side in one run on the same disk:

  loader  realfake.training.data.train_stream exactly as training streams it (realfake.training.train.TrainingData: the
          config's shuffle buffer, seed, augmentation and weights; interleaved shard readers, shuffle
          buffer, augmentation, batching, prefetch), its batches taken one after the other and nothing
          done with them. One child process per (cores, batch size), pinned to that many cores
          (os.sched_setaffinity, before TensorFlow starts) and given as many threads: TensorFlow's
          intra-op pool and the loader's own (train.loader_threads), as `realfake.training.train` sizes them.
          Batch sizes: the GPU preset's (config/presets/gpu.yaml) and the base config's.
          warm   one stream over --epochs + 1 epochs, as `model.fit` gets it; the first (reading the files
                 into the page cache, tracing) not counted; images/s is the median epoch.
          cold   at the GPU preset's batch size: a stream of one epoch started after every shard file was
                 dropped from the page cache, alternating with the same one-epoch stream warm.
  stages  one core, the GPU preset's batch size, warm: the stream cut after each of its stages (the shards
          read by np.load through the loader's interleaved readers; examples sliced and batched; the
          shuffle buffer; the augmentation, i.e. the whole loader), CPU time per image of each.
  bytes   the training shards' pixel files read whole, one after the other (warm: the median of three
          passes after one untimed; cold: each file dropped from the page cache first): `cat` > /dev/null,
          reads of 8 MiB into one buffer (the plain sequential read), np.fromfile (a new array for each file),
          the loader's np.load (realfake.shards.shardset.load_shard), two files at a time (the loader's two
          interleaved readers), O_DIRECT reads of 8 MiB, and the same pixels stored as float16.
  decode  turning float16 (or bfloat16) pixels back into float32: tf.cast (in the loader's graph) and
          numpy's astype, CPU time per image on one core.

Cold reads without root: the page cache cannot be dropped as a whole, but a file's own clean pages can
(posix_fadvise(POSIX_FADV_DONTNEED) after fsync; checked with util-linux's `fincore` where it is
installed). On a virtual machine the host may still hold the disk's blocks in its own cache: "cold" is then
this machine's cold, an upper bound on a real disk's.

Goal (issue 24): one GPU node's loader (16 cores) >= 41,000 images/s, i.e. >= 2,600 images/s per core, with the
same exact-resume and determinism guarantees (the stream is not changed here). 41,000 images/s of 64x64x6 float32
is 4.0 GB/s of .npy pixels. The machine is shared: the load average is recorded beside the numbers, and the CPU
time the loader's process spends per image (all its threads, time.process_time) moves much less with other load
than the wall clock: images per CPU-second is what one core gives when the loader has it to itself, and
"cores busy" (CPU seconds per second) shows whether the loader kept its cores busy or waited (on the disk, on
one of its stages, or on other processes' share of the cores). TensorFlow's and tf.data's threads may spin a
while before they sleep: the CPU time per image with several cores is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
GOAL_PER_CORE, GOAL_NODE, NODE_CORES = 2600, 41000, 16
EXAMPLE_BYTES = 64 * 64 * 6 * 4
DIRECT_BLOCK = 8 << 20

MAKE_SHARDS = "import sys; from realfake.testing import mock_shards; mock_shards(sys.argv[1], int(sys.argv[2]))"


def configs() -> tuple[dict, int]:
    """The base config's ``train:`` block and the GPU preset's batch size."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    gpu = yaml.safe_load((ROOT / "config" / "presets" / "gpu.yaml").read_text())
    return cfg["train"], gpu["train"]["batch_size"]


# ---------------------------------------------------------------------------------------------- page cache, reads


def drop(paths) -> None:
    """Each file's pages out of the page cache (its own clean pages: no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident(paths) -> int | None:
    """Bytes of ``paths`` in the page cache (util-linux fincore), or None where it is not installed."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, paths)],
                         capture_output=True, text=True).stdout
    return sum(int(v) for v in out.split())


def read_direct(path) -> None:
    """The whole file in O_DIRECT reads of DIRECT_BLOCK into a page-aligned buffer: no page cache at all."""
    buf = mmap.mmap(-1, DIRECT_BLOCK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        while os.readv(fd, [buf]) == DIRECT_BLOCK:
            pass
    finally:
        os.close(fd)
        buf.close()


def read_buffered(path) -> None:
    """The whole file in reads of DIRECT_BLOCK into one buffer used again and again: no fresh memory, like `cat`."""
    buf = bytearray(DIRECT_BLOCK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def read_fromfile(path) -> None:
    import numpy as np

    np.fromfile(path, dtype=np.uint8)


def read_npy(path) -> None:
    from realfake.shards.shardset import load_shard

    load_shard(path)


def in_pairs(reader):
    """Two files at a time, one thread each (the loader's two interleaved readers; reads release the GIL)."""

    def read_all(paths):
        for a, b in zip(paths[::2], paths[1::2] + [None] * (len(paths) % 2)):
            ts = [threading.Thread(target=reader, args=(p,)) for p in (a, b) if p is not None]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

    return read_all


def read_cat(paths) -> None:
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", *map(str, paths)], stdout=null, check=True)


def time_reads(read_all, paths, cold: bool, repeats: int = 3) -> float:
    """Median seconds to read ``paths`` (``cold``: each file dropped from the page cache before every pass)."""
    times = []
    if not cold:
        read_all(paths)
    for _ in range(repeats):
        if cold:
            drop(paths)
        t0 = time.perf_counter()
        read_all(paths)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def each(reader):
    return lambda paths: [reader(p) for p in paths]


def bytes_table(xs, f16s) -> dict:
    """GB/s of each way of reading the pixel shards, warm and cold."""
    rows = {}
    size32 = sum(p.stat().st_size for p in xs)
    size16 = sum(p.stat().st_size for p in f16s)
    ways = [
        ("cat > /dev/null", "float32", read_cat, xs, size32, True),
        (f"read, {DIRECT_BLOCK >> 20} MiB into one buffer", "float32", each(read_buffered), xs, size32, True),
        ("np.fromfile (a new array a file)", "float32", each(read_fromfile), xs, size32, True),
        ("np.load (the loader's reader)", "float32", each(read_npy), xs, size32, True),
        ("np.load, 2 files at a time", "float32", in_pairs(read_npy), xs, size32, True),
        (f"O_DIRECT, {DIRECT_BLOCK >> 20} MiB reads", "float32", each(read_direct), xs, size32, False),
        ("O_DIRECT, 2 files at a time", "float32", in_pairs(read_direct), xs, size32, False),
        ("np.load", "float16", each(read_npy), f16s, size16, True),
        ("np.load, 2 files at a time", "float16", in_pairs(read_npy), f16s, size16, True),
    ]
    for label, dtype, fn, paths, size, warm in ways:
        w = size / time_reads(fn, paths, cold=False) / 1e9 if warm else None
        c = size / time_reads(fn, paths, cold=True) / 1e9
        rows[(label, dtype)] = {"warm": w, "cold": c, "bytes": size}
    drop([*xs, *f16s])
    return {"rows": rows, "resident_after_drop": resident([*xs, *f16s]), "size32": size32, "size16": size16}


# ------------------------------------------------------------------------------------------------- child processes


def pin(cores: int) -> None:
    """This process on ``cores`` cores (the first of those it may use), before TensorFlow starts its pools."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])


def training_data(shards: str, batch: int, cores: int):
    """The training split and train_stream's options exactly as realfake.training.train makes them, with ``batch`` and
    ``cores`` threads (TensorFlow's pools and the loader's own)."""
    from realfake.training.runtime import configure_threads
    from realfake.training.train import TrainingData, train_config

    tcfg = train_config(dict(configs()[0], batch_size=batch, loader_threads=cores))
    configure_threads(cores, tcfg["inter_op_threads"])
    import tensorflow as tf

    if tcfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return TrainingData.read(shards, tcfg, multi=False), tcfg


def clock(it, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) to take ``steps`` batches from ``it``."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(it)
    return time.perf_counter() - t0, time.process_time() - c0


def child_loader(shards: str, cores: int, batch: int, epochs: int, cold_rounds: int) -> dict:
    pin(cores)
    data, tcfg = training_data(shards, batch, cores)
    from realfake.training.data import train_stream

    files = [*data.train.x, *data.train.y]
    load = [os.getloadavg()[0]]
    # warm: one stream over the epochs, as model.fit gets it; the first epoch reads the files and traces
    it = iter(train_stream(data.train, batch, 0, epochs + 1, **data.stream))
    clock(it, data.steps)
    warm = [clock(it, data.steps) for _ in range(epochs)]
    del it
    load.append(os.getloadavg()[0])
    cold, fresh = [], []
    for r in range(cold_rounds):
        for which in ("cold", "warm") if r % 2 == 0 else ("warm", "cold"):
            if which == "cold":
                drop(files)
            it = iter(train_stream(data.train, batch, epochs + 1 + r, epochs + 2 + r, **data.stream))
            (cold if which == "cold" else fresh).append(clock(it, data.steps))
            del it
    if cold_rounds:
        load.append(os.getloadavg()[0])
    return {"n": data.train.n_examples, "warm": warm, "cold": cold, "fresh": fresh, "load": load,
            "cpus": sorted(os.sched_getaffinity(0)), "augment": tcfg["augment"], "shuffle": tcfg["shuffle_buffer"],
            "deterministic": tcfg["deterministic"]}


def child_stages(shards: str, batch: int, epochs: int, f16: str) -> dict:
    """One core: the stream cut after each stage; then the cost of decoding float16 and bfloat16 pixels."""
    pin(1)
    data, _ = training_data(shards, batch, 1)
    import numpy as np
    import tensorflow as tf

    from realfake.training.data import _load, loader_options, train_stream

    train, n = data.train, data.train.n_examples
    stream = dict(data.stream)

    def reads_only(k):  # the loader's readers (cycle_length 2, the same _load): whole shards, nothing sliced
        files = tf.data.Dataset.from_tensor_slices(([str(x) for x in train.x], [str(y) for y in train.y],
                                                    [""] * len(train.x)))
        read = lambda x, y, w: tf.data.Dataset.from_tensors(tuple(tf.numpy_function(  # noqa: E731
            _load, [x, y, w], [tf.float32, tf.int32, tf.float32], stateful=False)))
        return files.interleave(read, cycle_length=2, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    variants = [
        ("np.load of whole shards, 2 interleaved readers",
         lambda e: tf.data.Dataset.range(e + 1).flat_map(reads_only).with_options(loader_options(1))
         .prefetch(tf.data.AUTOTUNE), len(train.x)),
        ("+ sliced into examples, batched", lambda e: train_stream(train, batch, 0, e + 1, **dict(
            stream, shuffle_buffer=0, augment_examples=False)), data.steps),
        ("+ shuffle buffer", lambda e: train_stream(train, batch, 0, e + 1, **dict(stream, augment_examples=False)),
         data.steps),
        ("+ augmentation: the loader", lambda e: train_stream(train, batch, 0, e + 1, **stream), data.steps),
    ]
    out = {"stages": [], "augment": stream["augment_examples"]}
    for label, make, steps in variants:
        it = iter(make(epochs))
        clock(it, steps)
        out["stages"].append((label, [clock(it, steps) for _ in range(epochs)]))
        del it

    # decoding 16-bit pixels back into float32, one shard at a time
    x16 = np.load(f16, allow_pickle=False)
    bf = (np.load(train.x[0], allow_pickle=False).view(np.uint32) >> 16).astype(np.uint16).view(tf.bfloat16.as_numpy_dtype)

    def per_image(fn, reps=5):
        fn()
        c0 = time.process_time()
        for _ in range(reps):
            fn()
        return (time.process_time() - c0) / reps / len(x16)

    h, b = tf.constant(x16), tf.constant(bf)
    out["decode"] = {
        "float16, tf.cast": per_image(lambda: tf.cast(h, tf.float32)),
        "bfloat16, tf.cast": per_image(lambda: tf.cast(b, tf.float32)),
        "float16, numpy astype": per_image(lambda: x16.astype(np.float32)),
        "float32, copy (memcpy)": per_image(lambda: np.load(train.x[0], mmap_mode="r", allow_pickle=False).copy()),
    }
    out["n"] = n
    return out


def run_child(*args) -> dict:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------- main


def lscpu_model() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"^Model name:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else "?"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    base, gpu_batch = configs()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=8192, help="training examples [%(default)s]")
    p.add_argument("--epochs", type=int, default=3, help="timed warm epochs per run [%(default)s]")
    p.add_argument("--cold-rounds", type=int, default=2,
                   help="cold epochs (and as many warm, alternating) at the GPU preset's batch size [%(default)s]")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2], help="cores to pin the loader to [%(default)s]")
    p.add_argument("--batches", type=int, nargs="+", default=[gpu_batch, base["batch_size"]],
                   help="batch sizes [the GPU preset's and the base config's: %(default)s]")
    p.add_argument("--no-bytes", action="store_true", help="skip the read and decode measurements")
    p.add_argument("--workdir", default=None, help="folder on the disk to measure [a temporary folder]")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, *args = a.child
        if kind == "loader":
            shards, cores, batch, epochs, cold = args
            result = child_loader(shards, int(cores), int(batch), int(epochs), int(cold))
        else:
            shards, batch, epochs, f16 = args
            result = child_stages(shards, int(batch), int(epochs), f16)
        print(json.dumps(result))
        return 0

    usable = len(os.sched_getaffinity(0))
    cores = [c for c in a.cores if c <= usable]
    if len(cores) < len(a.cores):
        print(f"skipped {sorted(set(a.cores) - set(cores))} cores: this process may use {usable}")
    work = Path(tempfile.mkdtemp(prefix="realfake-bench-loader-", dir=a.workdir))
    started = uptime()
    try:
        import numpy as np

        n_total = int(a.examples / 0.99) + 1
        subprocess.run([sys.executable, "-c", MAKE_SHARDS, str(work), str(n_total)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["sync"], check=True)
        shards = work / "shards"
        xs = sorted(shards.glob("xtrain_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
        # the same pixels stored as float16, beside the shards (the shard format itself is not changed)
        (work / "f16").mkdir()
        f16s = []
        for x in xs:
            np.save(work / "f16" / x.name, np.load(x, allow_pickle=False).astype(np.float16))
            f16s.append(work / "f16" / x.name)
        subprocess.run(["sync"], check=True)

        runs = {}
        for c in cores:
            for b in a.batches:
                runs[c, b] = run_child("loader", shards, c, b, a.epochs, a.cold_rounds if b == gpu_batch else 0)
        stages = run_child("stages", shards, gpu_batch, a.epochs, f16s[0]) if not a.no_bytes else None
        reads = bytes_table(xs, f16s) if not a.no_bytes else None
        report(a, runs, stages, reads, gpu_batch, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(a, runs, stages, reads, gpu_batch, started) -> None:
    first = next(iter(runs.values()))
    n = first["n"]
    print(f"machine: {lscpu_model()}, {os.cpu_count()} CPUs; at the start: {started}")
    print(f"loader: realfake.training.data.train_stream as realfake.training.train streams it: shuffle buffer {first['shuffle']}, "
          f"augmentation {'on' if first['augment'] else 'off'}, deterministic {first['deterministic']}, "
          f"2 interleaved shard readers; {n} training examples ({n * EXAMPLE_BYTES / 1e9:.2f} GB of float32 "
          f"pixels) in shards of 512; warm: median of {a.epochs} epochs of one stream after an untimed one; "
          f"cold: median of {a.cold_rounds} one-epoch streams started with every shard dropped from the page cache, "
          f"alternating with the same one-epoch stream warm")
    print()
    print(f"| {'batch':>5} | {'cores':>5} | {'data':<22} | {'images/s':>8} | {'images/s/core':>13} | "
          f"{'CPU s/1000 img':>14} | {'images/CPU-s':>12} | {'cores busy':>10} | {'per core / 2,600':>16} | "
          f"{'load (1 min)':>12} |")
    print(f"| {'-' * 4}: | {'-' * 4}: | {'-' * 22} | {'-' * 7}: | {'-' * 12}: | {'-' * 13}: | {'-' * 11}: | "
          f"{'-' * 9}: | {'-' * 15}: | {'-' * 11}: |")
    summary = {}
    for (c, b), r in runs.items():
        kinds = [("warm, one stream", r["warm"], r["load"][:2])]
        if r["cold"]:
            kinds += [("warm, one-epoch stream", r["fresh"], r["load"][1:]), ("cold, one-epoch stream", r["cold"],
                                                                               r["load"][1:])]
        for label, ts, load in kinds:
            rate = statistics.median(n / t for t, _ in ts)
            cpu = statistics.median(1000 * cp / n for _, cp in ts)
            summary[c, b, label] = (rate, cpu)
            print(f"| {b:>5} | {c:>5} | {label:<22} | {rate:>8,.0f} | {rate / c:>13,.0f} | {cpu:>14.3f} | "
                  f"{1000 / cpu:>12,.0f} | {rate * cpu / 1000:>10.2f} | {rate / c / GOAL_PER_CORE:>16.2f} | "
                  f"{'–'.join(f'{v:.1f}' for v in (min(load), max(load))):>12} |")
    print()
    for (c, b), r in runs.items():
        print(f"  {c} core(s) (CPUs {r['cpus']}), batch {b}, warm images/s per epoch: "
              + ", ".join(f"{n / t:,.0f}" for t, _ in r["warm"])
              + (", cold: " + ", ".join(f"{n / t:,.0f}" for t, _ in r["cold"]) if r["cold"] else ""))
    print()
    best = max(cores for cores, b in runs if b == gpu_batch) if any(b == gpu_batch for _, b in runs) else None
    if best is not None:
        for c in cores_of(runs, gpu_batch):
            rate, cpu = summary[c, gpu_batch, "warm, one stream"]
            wall, per_cpu = rate / c, 1000 / cpu
            print(f"goal, batch {gpu_batch}, warm, {c} core(s): {wall:,.0f} images/s per core, wall-clock "
                  f"({wall / GOAL_PER_CORE:.2f} x 2,600: {'met' if wall >= GOAL_PER_CORE else 'NOT met'}); "
                  f"{per_cpu:,.0f} images per CPU-second ({per_cpu / GOAL_PER_CORE:.2f} x 2,600: "
                  f"{'met' if per_cpu >= GOAL_PER_CORE else 'NOT met'}); x {NODE_CORES} cores, if it scaled "
                  f"linearly (not measured past {best}): {per_cpu * NODE_CORES:,.0f} images/s "
                  f"({per_cpu * NODE_CORES / GOAL_NODE:.2f} x {GOAL_NODE:,})")
        rate, cpu = summary[best, gpu_batch, "warm, one stream"]
        if 1 in cores_of(runs, gpu_batch) and best > 1:
            r1 = summary[1, gpu_batch, "warm, one stream"]
            print(f"scaling 1 -> {best} cores, batch {gpu_batch}: {rate / r1[0]:.2f}x images/s wall-clock, "
                  f"CPU per image {cpu / r1[1]:.2f}x")
        if (best, gpu_batch, "cold, one-epoch stream") in summary:
            cold = summary[best, gpu_batch, "cold, one-epoch stream"][0]
            fresh = summary[best, gpu_batch, "warm, one-epoch stream"][0]
            print(f"cold / warm, {best} core(s), batch {gpu_batch}: {cold / fresh:.2f} ({cold:,.0f} against "
                  f"{fresh:,.0f} images/s: {cold * EXAMPLE_BYTES / 1e9:.2f} against {fresh * EXAMPLE_BYTES / 1e9:.2f} "
                  f"GB/s of pixels)")
    small = [b for _, b in runs if b != gpu_batch]
    if best is not None and small:
        b = small[0]
        print(f"batch {gpu_batch} / batch {b}, {best} core(s), warm: "
              f"{summary[best, gpu_batch, 'warm, one stream'][0] / summary[best, b, 'warm, one stream'][0]:.2f}")
    if stages:
        print()
        print(f"Stages, 1 core, batch {gpu_batch}, warm (each row: the stream cut after that stage; medians of "
              f"{a.epochs} epochs):")
        print()
        print(f"| {'stream up to':<48} | {'CPU µs/image':>12} | {'images/CPU-s':>12} | {'of the loader':>13} |")
        print(f"| {'-' * 48} | {'-' * 11}: | {'-' * 11}: | {'-' * 12}: |")
        costs = [(label, statistics.median(1e6 * c / stages["n"] for _, c in ts)) for label, ts in stages["stages"]]
        whole = costs[-1][1]
        for label, us in costs:
            print(f"| {label:<48} | {us:>12.1f} | {1e6 / us:>12,.0f} | {us / whole:>12.0%} |")
        print()
        print(f"| {'decode to float32, 1 core':<48} | {'CPU µs/image':>12} | {'of the loader':>13} |")
        print(f"| {'-' * 48} | {'-' * 11}: | {'-' * 12}: |")
        for label, s in stages["decode"].items():
            print(f"| {label:<48} | {1e6 * s:>12.1f} | {1e6 * s / whole:>12.0%} |")
    if reads:
        need = GOAL_NODE * EXAMPLE_BYTES / 1e9
        print()
        print(f"Reading the training pixel shards whole ({reads['size32'] / 1e9:.2f} GB "
              f"as float32); images/s: of the cold rate; the goal needs {need:.2f} GB/s of float32 pixels "
              f"({GOAL_NODE:,} x {EXAMPLE_BYTES:,} B):")
        print()
        print(f"| {'read':<32} | {'stored':<7} | {'warm GB/s':>9} | {'cold GB/s':>9} | {'cold images/s':>13} | "
              f"{'/ 41,000':>8} |")
        print(f"| {'-' * 32} | {'-' * 7} | {'-' * 8}: | {'-' * 8}: | {'-' * 12}: | {'-' * 7}: |")
        for (label, dtype), r in reads["rows"].items():
            per_image = EXAMPLE_BYTES // (2 if dtype == "float16" else 1)
            img = r["cold"] * 1e9 / per_image
            warm = f"{r['warm']:.2f}" if r["warm"] else "–"
            print(f"| {label:<32} | {dtype:<7} | {warm:>9} | {r['cold']:>9.2f} | {img:>13,.0f} | "
                  f"{img / GOAL_NODE:>8.2f} |")
        res = reads["resident_after_drop"]
        print()
        print("page cache after a drop: " + (f"{res:,} of {reads['size32'] + reads['size16']:,} bytes resident "
                                             "(fincore)" if res is not None else "not checked (no fincore)"))
        rows = reads["rows"]
        plain = rows[f"read, {DIRECT_BLOCK >> 20} MiB into one buffer", "float32"]
        fresh = rows["np.fromfile (a new array a file)", "float32"]
        npy = rows["np.load (the loader's reader)", "float32"]
        print(f"np.load / plain read, float32: warm {npy['warm'] / plain['warm']:.2f}, cold "
              f"{npy['cold'] / plain['cold']:.2f}; np.fromfile / plain read: warm {fresh['warm'] / plain['warm']:.2f}, "
              f"cold {fresh['cold'] / plain['cold']:.2f} (new memory for every file)")
        if best is not None:
            for label in ("warm, one stream", "cold, one-epoch stream"):
                if (best, gpu_batch, label) in summary:
                    gbs = summary[best, gpu_batch, label][0] * EXAMPLE_BYTES / 1e9
                    ref = plain["cold" if label.startswith("cold") else "warm"]
                    print(f"the loader's pixels, {label}, {best} core(s), batch {gpu_batch}: {gbs:.2f} GB/s = "
                          f"{gbs / ref:.2f} x the plain read of the same files, {label.split(',')[0]}")
        if stages:
            reader = 1e6 / costs[0][1]
            disk = rows["np.load, 2 files at a time", "float32"]["cold"] * 1e9 / EXAMPLE_BYTES
            print(f"the loader's two interleaved readers, warm, at most 2 x {reader:,.0f} = {2 * reader:,.0f} "
                  f"images/s whatever the cores ({2 * reader / GOAL_NODE:.2f} x {GOAL_NODE:,}); cold, at most "
                  f"np.load's two files at a time, {disk:,.0f} ({disk / GOAL_NODE:.2f} x)")
        h16 = rows["np.load, 2 files at a time", "float16"]["cold"] * 1e9 / (EXAMPLE_BYTES // 2)
        h32 = rows["np.load, 2 files at a time", "float32"]["cold"] * 1e9 / EXAMPLE_BYTES
        print(f"cold, 2 files at a time: float16 {h16:,.0f} images/s against float32 {h32:,.0f} ({h16 / h32:.2f}x); "
              f"the goal's {GOAL_NODE:,} images/s need {need:.2f} GB/s of float32, {need / 2:.2f} of float16")
    print()
    print(f"at the end: {uptime()}")


def cores_of(runs, batch):
    return [c for c, b in runs if b == batch]


if __name__ == "__main__":
    sys.exit(main())
