"""Bricks: the sky tiling of the Legacy Surveys, ``survey-bricks.fits.gz``, and batching.

A brick is ~0.25 deg x 0.25 deg; its name is RA*10 as 4 digits, ``p``/``m`` and
|Dec|*10 as 3 digits (``1211p060``). Bricks overlap slightly: each owns the
unique area RA1..RA2, DEC1..DEC2 and sources there are ``brick_primary``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import check_brick

BRICK_SIZE_DEG = 0.25
PIXSCALE_ARCSEC = 0.262


def brick_name(ra: float, dec: float) -> str:
    return "%04d%s%03d" % (int(ra * 10), "m" if dec < 0 else "p", int(abs(dec) * 10 + 1e-6))


def brick_grid() -> np.ndarray:
    """The whole-sky brick table, in the columns of ``survey-bricks.fits.gz``.

    Rows are 0.25 deg in Dec; each row holds as many equal RA bricks as fit at
    its Dec (~662,000 bricks in all, as in the real file).
    """
    rows = []
    brickid = 1
    nrow = int(round(180 / BRICK_SIZE_DEG)) + 1
    for row in range(nrow):
        dec = -90.0 + row * BRICK_SIZE_DEG
        dec1, dec2 = max(-90.0, dec - BRICK_SIZE_DEG / 2), min(90.0, dec + BRICK_SIZE_DEG / 2)
        ncol = max(1, int(round(360.0 * np.cos(np.radians(dec)) / BRICK_SIZE_DEG)))
        col = np.arange(ncol)
        width = 360.0 / ncol
        t = np.zeros(ncol, dtype=GRID_DTYPE)
        t["RA1"] = col * width
        t["RA2"] = (col + 1) * width
        t["RA"] = (col + 0.5) * width
        t["DEC"], t["DEC1"], t["DEC2"] = dec, dec1, dec2
        t["BRICKROW"] = row
        t["BRICKCOL"] = col
        t["BRICKQ"] = col % 4
        t["BRICKID"] = brickid + col
        t["BRICKNAME"] = [brick_name(r, dec) for r in t["RA"]]
        brickid += ncol
        rows.append(t)
    return np.concatenate(rows)


GRID_DTYPE = np.dtype(
    [
        ("BRICKNAME", "S8"),
        ("BRICKID", ">i4"),
        ("BRICKQ", ">i2"),
        ("BRICKROW", ">i4"),
        ("BRICKCOL", ">i4"),
        ("RA", ">f8"),
        ("DEC", ">f8"),
        ("RA1", ">f8"),
        ("RA2", ">f8"),
        ("DEC1", ">f8"),
        ("DEC2", ">f8"),
    ]
)


def read_survey_bricks(path: str | Path, columns=("BRICKNAME", "RA", "DEC", "RA1", "RA2", "DEC1", "DEC2")):
    """Read ``survey-bricks.fits.gz`` into a pandas DataFrame indexed by brick name."""
    import fitsio
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"survey bricks table not found: {path}")
    try:
        data = fitsio.read(path, ext=1, columns=[c for c in columns])
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read columns {list(columns)} from {path}: {err}") from err
    df = pd.DataFrame({c: data[c].astype(data[c].dtype.newbyteorder("=")) for c in columns if c != "BRICKNAME"})
    df.index = pd.Index(np.char.strip(data["BRICKNAME"].astype("U8")), name="BRICKNAME")
    return df
