"""Benchmark of the cutout stage on full-size (3600x3600) bricks: cutouts per second per core, and the
stage's time against merely decompressing the same FITS files.

    .venv/bin/python benchmarks/cutouts.py [--bricks 8] [--repeats 3] [--sparse 10] [--data DIR]

Renders one full-size synthetic brick with GalSim (about 4 minutes, kept in --data for later runs) and
copies it under --bricks names, in three variants:
  100x100 tiles   the coadds compressed as legacypipe does (a real release), the synthetic density of
                  sources (~1,550 cutouts per coadd: their stamps touch nearly every tile)
  one tile/row    the same pixels compressed in one tile per row (fpack's default)
  sparse          100x100 tiles, one source in --sparse kept in the catalogues (~155 cutouts per coadd)
Then, side by side in one run, each a fresh child process on one core, files in the page cache (each run
reads them once first):
  fitsio    decompress every coadd file the stage reads (release and injection run, 12 per brick)
  astropy   the same with astropy.io.fits
  astropy+kept  the same, with the stage's malloc setting (batches.keep_freed_memory: freed planes reused)
  tiles     the same with the stage's own decoding (realfake.inputs.fitstiles: astropy's codecs, tile by tile, into
            one reused plane): not a reader a user has, but what the stage's own overhead is measured against
  floor     the fastest decompression (tiles, where it is the fastest), each brick's files followed by a
            file of its share of the stage's cutout bytes (in 96 KB writes, one chunk each, as HDF5 writes
            them), settled as the stage's are (atomic.Settler: flushed and dropped from the page cache in
            the background): what any stage must do
  stage     realfake.cutouts.batches.run_batch on the bricks: catalogues, selection, WCS check, decompression (of
            the tiles under the cutouts), cutouts, HDF5 (the libraries' import, once per job, is not
            timed, here or in the others; nor is Python's start)
The stage and the floor write to --out (--data by default). Writing 300 MB of cutouts a dense brick costs what
the file system charges for new pages: on the VM this was written on (it hands free memory back to its host),
0.06 s a brick while pages freed earlier last, then ~0.8 s a brick unless the written pages are dropped (as
both do), and more in tmpfs. Last, writing the densest variant's cutout bytes alone, in writes of 96 KB, 1 MB
and 32 MB.
The ratios are stage / the fastest reader (fitsio or astropy) decompressing the whole files, and stage / tiles
(its own decoding of the whole files), over all bricks, and over the bricks after the first (a job's first brick
pays for fresh memory once; a job of the configured 100 bricks barely sees it). Goal (issue 5): stage / the
fastest reader <= 1.2, and below 1 where only the tiles under the cutouts need decompressing. The reference
made ~1 million cutouts with 1,600 Haswell cores in one hour: ~0.17 cutouts/s/core.
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
LIBRARIES = ("fitsio", "astropy", "astropy+kept")  # the readers a user has: the "fastest reader available"
READERS = (*LIBRARIES, "tiles")  # and the stage's own decoding (realfake.inputs.fitstiles), for its overhead
PARTS = (("release", None), ("injection", "rs0"))  # the coadds a brick's cutouts read: (directory, run)
CUTOUT_BYTES = 64 * 64 * 6 * 4  # one float32 stamp: one HDF5 chunk

DECOMPRESS = """
import sys, time
reader, write_bytes, raw, per_brick, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5:]
import fitsio, numpy as np  # imported before the clock starts, as in the stage
from astropy.io import fits
from realfake.atomic import Settler
if reader.endswith("kept") or reader == "tiles":  # the stage's allocator setting
    from realfake.cutouts.batches import keep_freed_memory
    assert keep_freed_memory()
if reader == "tiles":
    from realfake.inputs.coadds import PlaneBuffers
    from realfake.inputs.fitstiles import TiledImage
    buffers = PlaneBuffers()
stamp = np.ones((64, 64, 6), np.float32)
bricks = [paths[i : i + per_brick] for i in range(0, len(paths), per_brick)]
t0 = time.perf_counter()
with Settler() as settler:  # as the stage does with its brick files
    for k, brick in enumerate(bricks):
        if k == 1:
            settler.wait()  # (the stage's first brick is a batch of its own)
            t1 = time.perf_counter()
        if reader == "fitsio":
            for p in brick:
                fitsio.read(p, ext=1)
        elif reader == "tiles":  # the stage's decoder, whole planes into one reused buffer
            for p in brick:
                with fits.open(p) as f:
                    image = TiledImage.of(f)
                    assert image is not None, f"{p}: not a compression realfake.inputs.fitstiles reads"
                    image.read(buffers.get("plane", image.shape, np.float32))
        else:
            for p in brick:
                with fits.open(p) as f:
                    f[1].data
        if write_bytes:  # then a file of the brick's share of the cutouts' bytes, a 96 KB chunk a write as HDF5's
            with open(f"{raw}.{k}", "wb", buffering=0) as f:
                for _ in range(write_bytes // len(bricks) // stamp.nbytes):
                    f.write(stamp.data)
            settler.add(f"{raw}.{k}")
print(t1 - t0, time.perf_counter() - t1)  # the first brick (fresh memory), the others
"""
WRITE = """
import os, sys, time
n, path, piece = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = memoryview(bytearray(b"\\1" * piece))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
t0 = time.perf_counter()
for offset in range(0, n - piece + 1, piece):
    os.pwrite(fd, data, offset)
os.close(fd)
print(time.perf_counter() - t0)
"""
STAGE = """
import json, re, sys, time
import astropy.io.fits, astropy.wcs, h5py  # imported once per job (about 1 s for a batch of 100 bricks): not timed
from realfake.cutouts.batches import CutoutSettings, run_batch
root, out, bricks = sys.argv[1], sys.argv[2], sys.argv[3:]
sel = json.loads(open(out + ".selection.json").read())
s = CutoutSettings(release_root=root + "/release", injection_root=root + "/injection", rs=["rs0"], selection=sel)
t0 = time.perf_counter()
first, failures = run_batch(bricks[:1], out + "/first", s, workers=1)  # the job's first brick: fresh memory
assert len(failures) == 0, failures
t1 = time.perf_counter()
rest, failures = run_batch(bricks[1:], out + "/rest", s, workers=1)
t2 = time.perf_counter()
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
assert len(failures) == 0, failures
print(t1 - t0, t2 - t1, int(first["kept"].sum() + rest["kept"].sum()), hwm // 1024)
"""


def child(code: str, *args) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True, check=True)
    return out.stdout.split()


def make_data(data: Path, n_bricks: int, sparse: int) -> tuple[list[str], dict[str, Path]]:
    """The bricks, and the root of each variant (rendered and derived once, kept in ``data``)."""
    import fitsio

    from realfake.inputs import layout
    from realfake.inputs.bricks import brick_grid
    from realfake.synthetic.release import MockConfig, make_release
    from realfake.testing import clone_brick, retile

    seed = data / "seed"
    if not (seed / "synthetic.json").exists():
        print(f"rendering one 3600x3600 brick into {seed} (a few minutes, done once)...", flush=True)
        make_release(MockConfig(bricks=(SEED_BRICK,), image_size=3600, seed=5), seed)
    # the variants derive from the rendered brick alone, not from its copies
    only_seed = shutil.ignore_patterns(*(f"*{b}*" for b in {p.name for p in (seed / "release" / "coadd").glob("*/*")}
                                         if b != SEED_BRICK))
    rows = data / "rows"
    if not (rows / "synthetic.json").exists():
        print(f"rewriting its coadds with one tile per row into {rows}...", flush=True)
        shutil.rmtree(rows, ignore_errors=True)
        shutil.copytree(seed, rows, ignore=only_seed)
        for part, rs in PARTS:
            for path in layout.coadd_files(rows / part, SEED_BRICK, rs):
                retile(path, path, [1, 3600])
    thin = data / f"sparse{sparse}"
    if not (thin / "synthetic.json").exists():
        shutil.rmtree(thin, ignore_errors=True)
        shutil.copytree(seed, thin, ignore=only_seed)
        for path in (layout.tractor_file(thin / "release", SEED_BRICK),
                     layout.simcat_file(thin / "injection", SEED_BRICK, "rs0")):
            table, hdr = fitsio.read(str(path), ext=1, header=True)
            path.unlink()
            fitsio.write(str(path), table[::sparse], header=hdr)
    names = sorted(b for b in (n.strip() for n in brick_grid()["BRICKNAME"].astype("U8")) if b.endswith("p060"))
    bricks = [SEED_BRICK] + [b for b in names if b > SEED_BRICK][: n_bricks - 1]
    for root in (seed, rows, thin):
        for b in bricks[1:]:
            if not layout.tractor_file(root / "release", b).exists():
                clone_brick(root, SEED_BRICK, b, ["rs0"])
    return bricks, {"100x100 tiles": seed, "one tile per row": rows, f"sparse (1 source in {sparse})": thin}


def warm_memory(gb: float) -> None:
    import numpy as np

    t0 = time.perf_counter()
    np.ones(int(gb * 2**30) // 8)
    print(f"touched {gb:g} GB of memory once in {time.perf_counter() - t0:.1f} s", flush=True)


def measure(name: str, root: Path, files: list[str], bricks: list[str], out: Path, fastest: str, out_bytes: int):
    """One run of one measurement: ((seconds for all bricks, for all but the first), cutouts, peak RSS MB of the
    stage or 0)."""
    # each removes what it wrote: gigabytes of dirty pages left behind would slow the next one's writes
    if name == "stage":
        shutil.rmtree(out, ignore_errors=True)
        first, rest, n, rss = child(STAGE, root, out, *bricks)
        shutil.rmtree(out, ignore_errors=True)
    else:
        raw = out.parent / "floor.raw"
        first, rest = child(DECOMPRESS, fastest if name == "floor" else name, out_bytes if name == "floor" else 0,
                            raw, len(files) // len(bricks), *files)
        n, rss = 0, 0
        for k in range(len(bricks)):
            Path(f"{raw}.{k}").unlink(missing_ok=True)
    return (float(first) + float(rest), float(rest)), int(n), int(rss)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bricks", type=int, default=8, help="full-size bricks cut per run [%(default)s]")
    p.add_argument("--repeats", type=int, default=3, help="runs of each measurement, alternated [%(default)s]")
    p.add_argument("--sparse", type=int, default=10, help="the sparse variant keeps one source in this many "
                   "[%(default)s]")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "realfake-bench-cutouts",
                   help="where the rendered brick is kept between runs [%(default)s]")
    p.add_argument("--warm-gb", type=float, default=4.0,
                   help="memory touched once before measuring (a virtual machine's first touch of a page costs "
                        "~10 us, as much as decompressing it; every contender then starts on warm pages) "
                        "[%(default)s]")
    p.add_argument("--out", type=Path, help="where the stage writes its cutouts and the floor its bytes, to "
                   "measure on the file system a job would write to (a cluster's scratch) [under --data]")
    args = p.parse_args(argv)
    if args.bricks < 2:
        p.error("--bricks: at least 2 (the first brick of a job is also timed apart from the others)")

    import yaml

    from realfake.inputs import layout
    from realfake.cutouts.stamps import _stamps

    kernels = "numpy (realfake.cutouts._stamps not built)" if _stamps is None else "the C kernels (realfake.cutouts._stamps)"
    bricks, variants = make_data(args.data, args.bricks, args.sparse)
    warm_memory(args.warm_gb)
    selection = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())["selection"]
    out = (args.out or args.data) / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.selection.json").write_text(json.dumps(selection))
    files, times, cutouts, rss = {}, {}, {}, {}
    for variant, root in variants.items():
        files[variant] = [str(path) for b in bricks for part, rs in PARTS
                          for path in layout.coadd_files(root / part, b, rs)]
        for f in files[variant]:  # into the page cache, for every contender alike
            Path(f).read_bytes()
        times[variant] = {name: [] for name in (*READERS, "stage", "floor")}
        # the stage first: the floor writes as many bytes as its cutouts
        _, cutouts[variant], rss[variant] = measure("stage", root, files[variant], bricks, out, "", 0)
    for r in range(args.repeats):
        for variant, root in variants.items():
            order = [*READERS, "stage", "floor"]
            for name in order if r % 2 == 0 else order[::-1]:
                t = times[variant]
                fastest = min(READERS, key=lambda k: statistics.median(a for a, _ in t[k]) if t[k] else 0)
                seconds, _, _ = measure(name, root, files[variant], bricks, out, fastest,
                                        cutouts[variant] * CUTOUT_BYTES)
                t[name].append(seconds)  # (all bricks, all but the first)

    print(f"\n{len(bricks)} bricks of 3600x3600, {len(files[variant])} compressed FITS files per variant "
          f"({sum(Path(f).stat().st_size for f in files[variant]) / 1e6:.0f} MB); median of {args.repeats} runs, "
          f"one core each; outputs written to {out.parent}; stamps cut by "
          f"{kernels}\n")
    # a job's first brick pays for fresh memory (the stage's staged stamps, ~150 MB a dense coadd); a job of the
    # configured 100 bricks pays it once, so the bricks after the first are shown apart
    n = len(bricks)
    print(f"| variant | cutouts | measurement | seconds (runs) | per brick | ratio to the fastest reader | ratio to "
          f"tiles | per brick, bricks 2-{n} | ratio to the fastest reader, 2-{n} | ratio to tiles, 2-{n} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = []
    for variant, t in times.items():
        med = {k: statistics.median(a for a, _ in v) for k, v in t.items()}
        rest = {k: statistics.median(b for _, b in v) for k, v in t.items()}
        fastest = min(LIBRARIES, key=med.get)
        for k, v in t.items():
            runs = ", ".join(f"{a:.2f}" for a, _ in v)
            print(f"| {variant} | {cutouts[variant]} | {k} | {med[k]:.2f} ({runs}) | {med[k] / n:.2f} s | "
                  f"{med[k] / med[fastest]:.2f} | {med[k] / med['tiles']:.2f} | {rest[k] / (n - 1):.2f} s | "
                  f"{rest[k] / rest[fastest]:.2f} | {rest[k] / rest['tiles']:.2f} |")
        per_core = cutouts[variant] / med["stage"]
        summary.append(f"{variant}: stage / the fastest reader ({fastest}) {med['stage'] / med[fastest]:.2f} "
                       f"(bricks 2-{n}: {rest['stage'] / rest[fastest]:.2f}); stage / its own decoding of the "
                       f"whole files (tiles) {med['stage'] / med['tiles']:.2f} (bricks 2-{n}: "
                       f"{rest['stage'] / rest['tiles']:.2f}); stage / floor {med['stage'] / med['floor']:.2f}; "
                       f"{per_core:.0f} cutouts/s/core, {per_core / REFERENCE_PER_CORE:.0f}x the reference's "
                       f"{REFERENCE_PER_CORE:.2f}; peak RSS {rss[variant]} MB")
    print("\ngoal (issue 5): stage / the fastest reader <= 1.2, below 1 where only the tiles under the cutouts need "
          "decompressing")
    print("\n".join(summary))
    # what writing the densest variant's cutouts costs by itself, in HDF5's one-chunk writes and in larger ones
    nbytes = max(cutouts.values()) * CUTOUT_BYTES
    for where in dict.fromkeys([out.parent, args.data]):  # where the outputs went, and --data if elsewhere
        raw, writes = where / "write.raw", {}
        for piece in (CUTOUT_BYTES, 2**20, 2**25) * args.repeats:
            time.sleep(5)  # pages freed a few seconds ago go back to the host: new pages, as a job's output gets
            writes.setdefault(piece, []).append(float(child(WRITE, nbytes, raw, piece)[0]))
            raw.unlink()
        print(f"writing {nbytes / 1e9:.1f} GB (the cutouts of {max(cutouts.values())}) into {where}, seconds by the "
              "size of each write: " + ", ".join(f"{k // 1024} KB {statistics.median(v):.2f} s"
                                                 for k, v in writes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
