"""Benchmark of the cutout stage on full-size (3600x3600) bricks: cutouts per second per core, and the
stage's time against merely decompressing the same FITS files.

    .venv/bin/python benchmarks/cutouts.py [--bricks 4] [--repeats 3] [--data DIR]

Renders one full-size synthetic brick with GalSim (about 4 minutes, kept in --data for later runs) and
copies it under --bricks names. Then, side by side in one run, each a fresh child process on one core,
files in the page cache (each run reads them once first):
  fitsio    decompress every coadd file the stage reads (release and injection run, 12 per brick)
  astropy   the same with astropy.io.fits
  floor     fitsio's decompression, then a raw write of as many bytes as the stage's cutouts (a lower bound)
  stage     realfake.batches.run_batch on the bricks: catalogues, selection, WCS check, cutouts, HDF5
            (the libraries' import, once per job, is not timed; neither is Python's start in the others)
The ratio is stage / the fastest decompression. Goal (issue 5): <= 1.2. The reference made ~1 million
cutouts with 1,600 Haswell cores in one hour: ~0.17 cutouts/s/core.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_PER_CORE = 1e6 / 1600 / 3600
SEED_BRICK = "1210p060"

DECOMPRESS = """
import sys, time
paths = sys.argv[2:]
t0 = time.perf_counter()
if sys.argv[1].startswith("fitsio"):
    import fitsio
    for p in paths:
        fitsio.read(p, ext=1)
else:
    from astropy.io import fits
    for p in paths:
        with fits.open(p, memmap=False) as f:
            f[1].data
if len(sys.argv[1].split(":")) == 2:  # decompress, then write as many bytes as the stage's cutouts, raw
    import numpy as np
    block = np.ones((256, 64, 64, 6), np.float32)
    with open(sys.argv[1].split(":")[1], "wb") as f:
        for _ in range(int(sys.argv[1].split(":")[0].split("+")[1]) // 256):
            f.write(block.data)
print(time.perf_counter() - t0)
"""
STAGE = """
import json, re, sys, time
import astropy.wcs, h5py  # imported once per job (about 1 s for a batch of 100 bricks): not timed
from realfake.batches import CutoutSettings, run_batch
root, out, bricks = sys.argv[1], sys.argv[2], sys.argv[3:]
sel = json.loads(open(out + ".selection.json").read())
s = CutoutSettings(release_root=root + "/release", injection_root=root + "/injection", rs=["rs0"], selection=sel)
t0 = time.perf_counter()
cuts, failures = run_batch(bricks, out, s, workers=1)
dt = time.perf_counter() - t0
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
assert len(failures) == 0, failures
print(dt, int(cuts["kept"].sum()), hwm // 1024)
"""


def child(code: str, *args) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True, check=True)
    return out.stdout.split()


def make_data(data: Path, n_bricks: int) -> list[str]:
    from realfake.bricks import brick_grid
    from realfake.mock import MockConfig, clone_brick, make_release

    seed_root = data / "seed"
    if not (seed_root / "synthetic.json").exists():
        print(f"rendering one 3600x3600 brick into {seed_root} (a few minutes, done once)...", flush=True)
        make_release(MockConfig(bricks=(SEED_BRICK,), image_size=3600, seed=5), seed_root)
    names = sorted(b for b in (n.strip() for n in brick_grid()["BRICKNAME"].astype("U8")) if b.endswith("p060"))
    bricks = [SEED_BRICK] + [b for b in names if b > SEED_BRICK][: n_bricks - 1]
    for b in bricks[1:]:
        if not (seed_root / "release" / "tractor" / b[:3] / f"tractor-{b}.fits").exists():
            clone_brick(seed_root, SEED_BRICK, b, ["rs0"])
    return bricks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bricks", type=int, default=8, help="full-size bricks cut per run [%(default)s]")
    p.add_argument("--repeats", type=int, default=3, help="runs of each measurement, alternated [%(default)s]")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "realfake-bench-cutouts",
                   help="where the rendered brick is kept between runs [%(default)s]")
    args = p.parse_args(argv)

    import yaml

    from realfake import BANDS, layout

    bricks = make_data(args.data, args.bricks)
    root = args.data / "seed"
    files = [str(layout.coadd_file(root / part, b, kind, band, rs)) for b in bricks
             for part, rs in (("release", None), ("injection", "rs0")) for band in BANDS for kind in ("image", "invvar")]
    size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
    for f in files:  # into the page cache, for every contender alike
        Path(f).read_bytes()
    selection = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())["selection"]
    times = {"fitsio": [], "astropy": [], "floor": [], "stage": []}
    n_cutouts = rss = 0
    for r in range(args.repeats):
        for name in ("stage", "fitsio", "astropy", "floor") if r % 2 == 0 else ("floor", "astropy", "fitsio", "stage"):
            if name == "stage":
                out = args.data / "out"
                shutil.rmtree(out, ignore_errors=True)
                Path(f"{out}.selection.json").write_text(json.dumps(selection))
                dt, n_cutouts, rss = child(STAGE, root, out, *bricks)
                times[name].append(float(dt))
                n_cutouts, rss = int(n_cutouts), int(rss)
            elif name == "floor":
                raw = args.data / "floor.raw"
                times[name].append(float(child(DECOMPRESS, f"fitsio+{n_cutouts}:{raw}", *files)[0]))
                raw.unlink()
            else:
                times[name].append(float(child(DECOMPRESS, name, *files)[0]))
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = min(("fitsio", "astropy"), key=med.get)
    per_core = n_cutouts / med["stage"]
    print(f"\n{len(bricks)} bricks of 3600x3600, {len(files)} compressed FITS files ({size_mb:.0f} MB), "
          f"{n_cutouts} cutouts; median of {args.repeats} runs, one core each\n")
    print("| measurement | seconds (runs) | per brick | ratio to fastest decompression |")
    print("| --- | --- | --- | --- |")
    for k, v in times.items():
        runs = ", ".join(f"{t:.2f}" for t in v)
        print(f"| {k} | {med[k]:.2f} ({runs}) | {med[k] / len(bricks):.2f} s | {med[k] / med[fastest]:.2f} |")
    print(f"\nstage / decompression ({fastest}): {med['stage'] / med[fastest]:.2f} (goal <= 1.2); "
          f"stage / floor: {med['stage'] / med['floor']:.2f}")
    print(f"cutouts per second per core: {per_core:.0f}, {per_core / REFERENCE_PER_CORE:.0f}x the reference's "
          f"{REFERENCE_PER_CORE:.2f}")
    print(f"peak RSS of the stage (one brick at a time): {rss} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
