"""Benchmark of the shard stage: bytes written per second against a plain `cp`, wall time with 1, 2 and 4
parallel jobs, and the peak memory of each job.

    .venv/bin/python benchmarks/shards.py [--gb 2.0] [--memory-mb 320] [--jobs 1 2 4] [--batches 8] [--workdir DIR]

Writes brick cutout files of random pixels (64x64x6 float32, realfake.testing.mock_cutout_file) adding up to
--gb, then, side by side in one run on the same disk:
  cp      `cp` of those files to a new folder, then `sync`
  J jobs  the shard stage as the rules run it, each step a child process: plan_shards (one), scatter_shards
          (one per batch of brick files, --batches of them), gather_shards (--parts of them) and build_shards
          (one), with at most J of them running at once (`snakemake --cores J`, or J free SLURM slots), then
          `sync`; the same batches and parts for every J, so only the parallelism changes
Every J must give the same bytes (checked); the peak RSS of each job comes from its own /proc VmHWM.
Goals: issue 6, shards (1 job) >= 0.5 x cp and peak RSS bounded by the budget, not the data; issue 24, wall time
falling with the number of jobs. With J above the machine's cores (or its disk's bandwidth) the jobs queue for
them: the speed-up is bounded by min(J, cores), and by the disk once the jobs are I/O-bound.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXAMPLE_BYTES = 64 * 64 * 6 * 4
MAKE_INPUT = """
import sys
from realfake.testing import mock_cutout_file
out, n_bricks, per_brick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(n_bricks):
    brick = f"{1000 + k:04d}p100"
    mock_cutout_file(f"{out}/{brick}.h5", brick, per_brick // 2, per_brick - per_brick // 2, seed=k)
"""
# One job of the shard stage, as its rule's script runs it; it reports its own peak RSS (VmHWM of its address
# space, which exec starts afresh) and the RSS of the interpreter and libraries before the work
JOB = """
import re, sys, time
t0 = time.perf_counter()
from realfake.cutouts.brickfile import DEFAULT_CHANNELS
from realfake.shards.plan import ShardConfig, ShardPlan, make_plan
from realfake.shards.build import assemble, gather, scatter
def rss(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024
base, started = rss("VmRSS"), time.perf_counter() - t0
step, args = sys.argv[1], sys.argv[2:]
if step == "plan":
    cfg = ShardConfig(memory_mb=float(args[2]), split_by="example", balance="none")
    make_plan(args[3:], DEFAULT_CHANNELS, cfg).write(args[0])
else:
    plan = ShardPlan.read(args[0])
    if step == "scatter":
        scatter(plan, args[2:], args[1])
    elif step == "gather":
        gather(plan, args[4:], int(args[1]), int(args[2]), args[3])
    else:
        assemble(plan, args[2:], args[1])
print(started, rss("VmHWM"), base)
"""


def child(*args) -> tuple[int, int, float, float]:
    """Peak and base RSS (MB) of one job, its CPU seconds (user + system) and its start-up seconds (imports)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", JOB, *map(str, args)], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            err.seek(0)
            sys.exit(f"the {args[0]} job failed:\n{err.read()[-2000:]}")
        out.seek(0)
        started, peak, base = out.read().split()[-3:]
    return int(peak), int(base), usage.ru_utime + usage.ru_stime, float(started)


def shard_stage(work: Path, files: list, memory_mb: float, jobs: int, batches: int, parts: int) -> dict:
    """The stage's jobs with at most ``jobs`` at once: wall seconds per step, CPU and start-up seconds summed over
    the jobs, peak RSS, bytes and their hash."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    plan, wall, done = work / "plan.json", {}, []
    t0 = time.perf_counter()
    done.append(child("plan", plan, parts, memory_mb, *files))
    wall["plan"] = time.perf_counter() - t0
    scatter_dirs = [work / f"scatter{k}" for k in range(batches)]
    part_dirs = [work / f"gather{k}" for k in range(parts)]
    steps = {
        "scatter": [("scatter", plan, d, *files[k * len(files) // batches : (k + 1) * len(files) // batches])
                    for k, d in enumerate(scatter_dirs)],
        "gather": [("gather", plan, k, parts, d, *scatter_dirs) for k, d in enumerate(part_dirs)],
    }
    with ThreadPoolExecutor(jobs) as pool:
        for step, calls in steps.items():
            t = time.perf_counter()
            done += pool.map(lambda c: child(*c), calls)
            wall[step] = time.perf_counter() - t
    t = time.perf_counter()
    done.append(child("assemble", plan, work / "shards", *part_dirs))
    subprocess.run(["sync"], check=True)
    wall["assemble"] = time.perf_counter() - t
    wall["total"] = time.perf_counter() - t0
    out = work / "shards"
    digest = hashlib.sha256()
    for f in sorted(out.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    return {"wall": wall, "peak": max(d[0] for d in done), "over_base": max(d[0] - d[1] for d in done),
            "cpu": sum(d[2] for d in done), "startup": sum(d[3] for d in done),
            "bytes": sum(f.stat().st_size for f in out.glob("[xy]*.npy")), "sha256": digest.hexdigest(),
            "buckets": json.loads((work / "plan.json").read_text())["buckets"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0, help="input size in GB [%(default)s]")
    p.add_argument("--memory-mb", type=float, default=320, help="shards.memory_mb budget [%(default)s]")
    p.add_argument("--bricks", type=int, default=16, help="brick files the input is spread over [%(default)s]")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4], help="parallel jobs to compare [1 2 4]")
    p.add_argument("--batches", type=int, default=8, help="scatter jobs (cutout batches) [%(default)s]")
    p.add_argument("--parts", type=int, default=4, help="gather jobs (shards.gather_jobs) [%(default)s]")
    p.add_argument("--workdir", default=None, help="folder on the disk to measure [a temporary folder]")
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="realfake-bench-shards-", dir=a.workdir))
    try:
        per_brick = int(a.gb * 1e9 / EXAMPLE_BYTES / a.bricks)
        inputs = work / "cutouts"
        inputs.mkdir()
        subprocess.run([sys.executable, "-c", MAKE_INPUT, str(inputs), str(a.bricks), str(per_brick)], check=True)
        files = sorted(map(str, inputs.glob("*.h5")))

        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(inputs), str(work / "copy")], check=True)
        subprocess.run(["sync"], check=True)
        t_cp = time.perf_counter() - t0
        bytes_cp = sum(f.stat().st_size for f in (work / "copy").rglob("*") if f.is_file())
        shutil.rmtree(work / "copy")
        runs = {j: shard_stage(work / f"jobs{j}", files, a.memory_mb, j, a.batches, a.parts) for j in a.jobs}

        first = runs[a.jobs[0]]
        print(f"disk: {os.statvfs(work).f_frsize} B blocks under {work}; {os.cpu_count()} cores")
        print(f"input: {a.bricks} brick files, {bytes_cp / 1e9:.2f} GB; memory budget {a.memory_mb:.0f} MB per job "
              f"({bytes_cp / 2**20 / a.memory_mb:.1f}x smaller than the data), {sum(nb for _, _, nb in first['buckets'])} scatter buckets; "
              f"{a.batches} scatter jobs, {a.parts} gather jobs")
        print()
        cols = ["plan", "scatter", "gather", "assemble", "total"]
        print("| step | " + " | ".join(f"{c} s" for c in cols) + " | MB/s | speed-up | CPU s | start-up s "
              "| peak RSS MB (over base) |")
        print("| --- | " + " | ".join("---:" for _ in cols) + " | ---: | ---: | ---: | ---: | ---: |")
        print(f"| cp | | | | | {t_cp:.1f} | {bytes_cp / t_cp / 1e6:.0f} | | | | |")
        for j, r in runs.items():
            w = r["wall"]
            print(f"| {j} job{'s' if j > 1 else ''} | " + " | ".join(f"{w[c]:.1f}" for c in cols)
                  + f" | {r['bytes'] / w['total'] / 1e6:.0f} | {first['wall']['total'] / w['total']:.2f}"
                  + f" | {r['cpu']:.1f} | {r['startup']:.1f} | {r['peak']} ({r['over_base']}) |")
        print("CPU s: user + system of all the jobs; start-up s: their imports (Python, numpy, pandas, h5py), paid "
              "once a job whatever its size")
        print()
        same = len({r["sha256"] for r in runs.values()}) == 1
        print(f"shards byte-identical for {', '.join(map(str, runs))} jobs: {'yes' if same else 'NO'}")
        ratio = (first["bytes"] / first["wall"]["total"]) / (bytes_cp / t_cp)
        print(f"throughput ratio shards ({a.jobs[0]} job)/cp: {ratio:.2f} (goal >= 0.5: "
              f"{'met' if ratio >= 0.5 else 'NOT met'})")
        over = max(r["over_base"] for r in runs.values())
        print(f"largest peak RSS of a job above its interpreter and libraries: {over} MB "
              f"({over / a.memory_mb:.2f} x the budget)")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
