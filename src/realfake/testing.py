"""Fixtures for the tests and benchmarks: bricks cloned from a synthetic release, coadds retiled or recompressed,
brick files and shards of random pixels, free ports. None of the pipeline uses them (the synthetic release itself
is realfake.synthetic.release)."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd

from realfake.inputs import layout
from realfake.cutouts.brickfile import DEFAULT_CHANNELS, SOURCE_COLUMNS, write_brick


def clone_brick(root: str | Path, src: str, dst: str, rs_list) -> None:
    """Copy every file of brick ``src`` of a synthetic release under the name ``dst`` (same pixels, WCS, catalogues).

    For tests and benchmarks that need many bricks, or damaged copies of a good one, without rendering them.
    """
    rel, inj = Path(root) / "release", Path(root) / "injection"
    pairs = [(layout.coadd_dir(rel, src), layout.coadd_dir(rel, dst)),
             (layout.tractor_file(rel, src), layout.tractor_file(rel, dst))]
    for rs in rs_list:
        pairs += [(layout.coadd_dir(inj, src, rs), layout.coadd_dir(inj, dst, rs)),
                  (layout.obiwan_dir(inj, src, rs), layout.obiwan_dir(inj, dst, rs)),
                  (layout.tractor_file(inj, src, rs).parent, layout.tractor_file(inj, dst, rs).parent)]
    for a, b in pairs:
        b.parent.mkdir(parents=True, exist_ok=True)
        if a.is_dir():
            b.mkdir(exist_ok=True)
            for f in a.iterdir():
                if f.is_file():
                    shutil.copy(f, b / f.name.replace(src, dst))
        else:
            shutil.copy(a, b)


def mock_cutout_file(path, brick: str, n_real: int, n_fake: int, size: int = 64, seed: int = 0,
                     mag_real=(20.5, 24.5), mag_fake=(21.0, 24.0)) -> None:
    """A per-brick cutout file (realfake.cutouts.brickfile's layout) of random pixels.

    For tests and benchmarks of the later stages at any scale, without rendering
    a release: class counts and the g-magnitude ranges of reals and fakes are
    chosen; the pixels are Gaussian noise plus a label-dependent offset.
    """
    rng = np.random.default_rng([seed, int(brick[:4]), int(brick[5:])])
    n = n_real + n_fake
    label = np.r_[np.zeros(n_real, np.int8), np.ones(n_fake, np.int8)]
    src = pd.DataFrame({c: np.zeros(n) for c in SOURCE_COLUMNS})
    src["id"] = np.arange(n)
    src["brick"], src["rs"], src["type"] = brick, np.where(label == 1, "rs0", ""), np.where(label == 1, "SIM", "EXP")
    src["label"] = label
    src["mag_g"] = np.where(label == 1, rng.uniform(*mag_fake, n), rng.uniform(*mag_real, n))
    src["mag_r"], src["mag_z"] = src["mag_g"] - 0.5, src["mag_g"] - 1.0
    src["size"], src["frac_nodata"] = rng.uniform(0.2, 1.5, n), 0.0
    stamps = rng.normal(0, 1, (n, size, size, len(DEFAULT_CHANNELS))).astype(np.float32)
    stamps += label[:, None, None, None] * 0.1
    empty = src.iloc[:0]
    cuts = pd.DataFrame([{"brick": brick, "rs": "", "label": 0, "n_in": n_real, "offedge": 0, "kept": n_real},
                         {"brick": brick, "rs": "rs0", "label": 1, "n_in": n_fake, "offedge": 0, "kept": n_fake}])
    write_brick(path, stamps, src, empty, cuts, [], DEFAULT_CHANNELS, dict(brick=brick, config_hash="mock"))


# Keywords that describe a compressed HDU's storage, not the image: written anew by the compression
_STORAGE_KEYS = re.compile(r"^(Z.*|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|T(TYPE|FORM)\d+|SIMPLE|EXTEND|"
                           r"CHECKSUM|DATASUM)$")


def retile(src: str | Path, dst: str | Path, tile, compress: str | None = None) -> None:
    """Rewrite a compressed coadd with compression tiles of (rows, columns) ``tile``, same header and quantisation.

    For tests and benchmarks of other tilings than legacypipe's (``[1, width]``: fpack's rows), and (``compress``,
    e.g. "GZIP_2") of other compressions than RICE.
    """
    import fitsio

    from realfake.synthetic.files import IMAGE_COMPRESSION, INVVAR_COMPRESSION, write_image

    src = Path(src)
    data, hdr = fitsio.read(str(src), ext=1, header=True)
    header = {k: hdr[k] for k in hdr.keys() if not _STORAGE_KEYS.match(k)}
    comp = IMAGE_COMPRESSION if "-image-" in src.name else INVVAR_COMPRESSION
    if compress is not None:
        comp = {**comp, "compress": compress}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_image(dst, data, header, comp, tile=list(tile))


def mock_shards(out, n: int, per_brick: int = 512) -> list[str]:
    """``n`` examples of random pixels in brick files of ``per_brick`` under ``out``, and their shards of 512 in
    ``out/shards`` (split by example, 1% test, no balancing); returns the brick files."""
    from realfake.shards.build import build

    files = []
    for k in range(-(-n // per_brick)):
        brick = f"{1000 + k:04d}p100"
        m = min(per_brick, n - k * per_brick)
        mock_cutout_file(f"{out}/{brick}.h5", brick, m // 2, m - m // 2, seed=k)
        files.append(f"{out}/{brick}.h5")
    build(files, f"{out}/shards", DEFAULT_CHANNELS, size=512, test_fraction=0.01, seed=1, split_by="example",
          balance="none")
    return files


def free_port_pair() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` free on localhost (two training workers' ports)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("localhost", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("localhost", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")
