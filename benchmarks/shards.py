"""Benchmark of the shard stage: bytes written per second against a plain `cp`, and peak memory.

    .venv/bin/python benchmarks/shards.py [--gb 2.0] [--memory-mb 320] [--workdir DIR]

Writes brick cutout files of random pixels (64x64x6 float32, realfake.testing.mock_cutout_file)
adding up to --gb, then, side by side in one run on the same disk:
  cp      `cp` of those files to a new folder, then `sync`
  shards  realfake.shards.build on them with a memory budget of --memory-mb, then `sync`
Both are timed as whole child processes; the shard build's peak RSS comes from wait4().
Goal (issue 6): shards throughput >= 0.5 x cp, and peak RSS bounded by the budget, not the data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
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
# The child reports its own peak RSS (VmHWM of its address space, which exec starts afresh)
BUILD = """
import re, sys
from realfake.brickfile import DEFAULT_CHANNELS
from realfake.shards import build
base = int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
s = build(sys.argv[3:], sys.argv[1], DEFAULT_CHANNELS, memory_mb=float(sys.argv[2]), split_by="example", balance="none")
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(s["scatter_buckets"], s["n_examples"], hwm // 1024, base // 1024)
"""


def run(cmd) -> tuple[float, str]:
    """Wall seconds and stdout of a child process, its `sync` included."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0, out


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0, help="input size in GB [%(default)s]")
    p.add_argument("--memory-mb", type=float, default=320, help="shards.memory_mb budget [%(default)s]")
    p.add_argument("--bricks", type=int, default=16, help="brick files the input is spread over [%(default)s]")
    p.add_argument("--workdir", default=None, help="folder on the disk to measure [a temporary folder]")
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="realfake-bench-shards-", dir=a.workdir))
    try:
        per_brick = int(a.gb * 1e9 / EXAMPLE_BYTES / a.bricks)
        inputs = work / "cutouts"
        inputs.mkdir()
        run([sys.executable, "-c", MAKE_INPUT, str(inputs), str(a.bricks), str(per_brick)])
        files = sorted(map(str, inputs.glob("*.h5")))

        t_cp, _ = run(["cp", "-r", str(inputs), str(work / "copy")])
        bytes_cp = du(work / "copy")
        shutil.rmtree(work / "copy")
        t_sh, out = run([sys.executable, "-c", BUILD, str(work / "shards"), str(a.memory_mb), *files])
        nb, n, rss_sh, rss_base = map(int, out.split())
        bytes_sh = sum(f.stat().st_size for f in (work / "shards").glob("[xy]*.npy"))

        mbps_cp, mbps_sh = bytes_cp / t_cp / 1e6, bytes_sh / t_sh / 1e6
        print(f"disk: {os.statvfs(work).f_frsize} B blocks under {work}")
        print(f"input: {a.bricks} brick files, {n} examples, {bytes_cp / 1e9:.2f} GB; memory budget {a.memory_mb:.0f} MB "
              f"({bytes_cp / 2**20 / a.memory_mb:.1f}x smaller than the data), {nb} scatter buckets")
        print()
        print(f"| {'step':<7} | {'bytes written':>13} | {'wall s':>7} | {'MB/s':>7} | {'peak RSS MB':>11} |")
        print(f"| {'-' * 7} | {'-' * 13}:| {'-' * 6}:| {'-' * 6}:| {'-' * 10}:|")
        print(f"| {'cp':<7} | {bytes_cp:>13,} | {t_cp:>7.1f} | {mbps_cp:>7.0f} | {'':>11} |")
        print(f"| {'shards':<7} | {bytes_sh:>13,} | {t_sh:>7.1f} | {mbps_sh:>7.0f} | {rss_sh:>11} |")
        print()
        ratio = mbps_sh / mbps_cp
        print(f"throughput ratio shards/cp: {ratio:.2f} (goal >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
        print(f"peak RSS {rss_sh} MB = {rss_base} MB of interpreter and libraries + {rss_sh - rss_base} MB "
              f"({(rss_sh - rss_base) / a.memory_mb:.2f} x the budget)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
