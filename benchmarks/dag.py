"""Benchmark of planning at survey scale: `snakemake -n` over 1k to 300k bricks, time and peak memory.

    .venv/bin/python benchmarks/dag.py [--sizes 1000 10000 100000 300000] [--batch-size 100]

For each size, the default config pointed at a release that holds nothing but its
survey-bricks.fits.gz (no per-brick file exists: the plan must not look for them), with the
bricks given as a file of names; the largest size is also selected as an RA/Dec box over
survey-bricks.fits.gz. Each dry run is a fresh `snakemake -n` child process (its whole job
listing printed, as a user sees it); its peak RSS comes from wait4().
Goal (issue 9): 300,000 bricks in <= 30 s and < 2 GB.
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

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def dry_run(work: Path) -> tuple[float, float, int, str]:
    """Seconds, peak RSS (MB), number of jobs and the last line of a `snakemake -n` in ``work``."""
    exe = Path(sys.executable).parent / "snakemake"
    t0 = time.perf_counter()
    with open(work / "dryrun.log", "w") as log:
        proc = subprocess.Popen([str(exe), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "-n"],
                                cwd=work, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    text = (work / "dryrun.log").read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"snakemake -n failed in {work}:\n{text[-3000:]}")
    total = [ln for ln in text.splitlines() if ln.startswith("total")]
    return dt, usage.ru_maxrss / 1024, int(total[-1].split()[-1]) if total else 0, text.strip().splitlines()[-1]


def setup(work: Path, release: Path, bricks) -> None:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    work.mkdir(parents=True)
    (work / "injection").mkdir()  # the release roots must be directories (checked when the run is planned)
    cfg["release"].update(root=str(release), injection_root=str(work / "injection"))
    if isinstance(bricks, dict):
        cfg["release"]["bricks"] = bricks
    else:
        (work / "bricks.txt").write_text("\n".join(bricks) + "\n")
        cfg["release"]["bricks"] = "bricks.txt"
    (work / "config").mkdir()
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 300000])
    p.add_argument("--batch-size", type=int, default=None, help="cutouts.batch_size [the config's]")
    args = p.parse_args(argv)

    from realfake.inputs import layout
    from realfake.inputs.bricks import brick_grid, bricks_in_box
    from realfake.synthetic.files import write_survey_bricks

    tmp = Path(tempfile.mkdtemp(prefix="realfake-dag-"))
    try:
        grid = brick_grid()
        release = tmp / "release"
        write_survey_bricks(grid, layout.survey_bricks(release))
        # a footprint like a DR's: the bricks between Dec -20 and +80, in RA order
        footprint = grid[(grid["DEC"] > -20) & (grid["DEC"] < 80)]
        names = np.char.strip(footprint["BRICKNAME"].astype("U8"))
        cases = [(f"{n:,} bricks, list file", list(names[np.linspace(0, len(names) - 1, n).astype(int)]))
                 for n in args.sizes]
        # a box holding about the largest size
        dec_hi = np.quantile(footprint["DEC"], min(1.0, max(args.sizes) / len(names)))
        cases.append((f"box Dec -20..{dec_hi:.1f}", {"ra": [0, 360], "dec": [-20.0, float(dec_hi)]}))
        print("| selection | bricks | jobs | dry run (s) | peak RSS (MB) |")
        print("| --- | --- | --- | --- | --- |")
        for label, bricks in cases:
            work = tmp / f"w{len(os.listdir(tmp))}"
            setup(work, release, bricks)
            if args.batch_size:
                cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
                cfg["cutouts"]["batch_size"] = args.batch_size
                (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
            n = len(bricks) if isinstance(bricks, list) else len(bricks_in_box(grid, bricks["ra"], bricks["dec"]))
            dt, rss, jobs, _ = dry_run(work)
            print(f"| {label} | {n:,} | {jobs:,} | {dt:.1f} | {rss:.0f} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\ngoal: 300,000 bricks in <= 30 s and < 2,048 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
