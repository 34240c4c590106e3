"""Bricks: the sky tiling of the Legacy Surveys, ``survey-bricks.fits.gz``, and batching.

A brick is ~0.25 deg x 0.25 deg; its name is RA*10 as 4 digits, ``p``/``m`` and
|Dec|*10 as 3 digits (``1211p060``). Bricks overlap slightly: each owns the
unique area RA1..RA2, DEC1..DEC2 and sources there are ``brick_primary``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from realfake.inputs.layout import check_brick, fits_error

BRICK_SIZE_DEG = 0.25
PIXSCALE_ARCSEC = 0.262

log = logging.getLogger(__name__)


def brick_name(ra: float, dec: float) -> str:
    return "%04d%s%03d" % (int(ra * 10), "m" if dec < 0 else "p", int(abs(dec) * 10 + 1e-6))


@functools.lru_cache(maxsize=1)
def _grid() -> np.ndarray:
    return _make_grid()


def brick_grid() -> np.ndarray:
    """The whole-sky brick table, in the columns of ``survey-bricks.fits.gz`` (made once per process; a copy).

    Rows are 0.25 deg in Dec; each row holds as many equal RA bricks as fit at
    its Dec (~662,000 bricks in all, as in the real file).
    """
    return _grid().copy()


def _make_grid() -> np.ndarray:
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


class BrickSelectionError(ValueError):
    """A brick selection that cannot be used; the message names the file, line or config key."""


def read_brick_list(path: str | Path) -> list[str]:
    """Brick names from a text file: one per line (or whitespace-separated); ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise BrickSelectionError(f"release.bricks: brick list file not found: {path}")
    names, seen = [], {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        for name in line.split("#", 1)[0].split():
            try:
                check_brick(name)
            except ValueError as err:
                raise BrickSelectionError(f"{path}:{lineno}: {err}") from None
            if name in seen:
                raise BrickSelectionError(f"{path}:{lineno}: brick {name} listed twice (first on line {seen[name]})")
            seen[name] = lineno
            names.append(name)
    if not names:
        raise BrickSelectionError(f"{path}: no brick names in the file")
    return names


def bricks_in_box(table, ra, dec) -> list[str]:
    """Bricks of a brick table whose centre lies in ``ra = [min, max]``, ``dec = [min, max]`` (deg).

    ``ra min > max`` selects across RA = 0 (e.g. ``[350, 10]``). Column names in either case.
    """
    cols = {c.lower(): c for c in table.dtype.names}
    (ra0, ra1), (dec0, dec1) = ra, dec
    r, d = np.asarray(table[cols["ra"]], float), np.asarray(table[cols["dec"]], float)
    in_ra = (r >= ra0) & (r < ra1) if ra0 <= ra1 else (r >= ra0) | (r < ra1)
    names = np.char.strip(np.asarray(table[cols["brickname"]]).astype("U8"))
    return sorted(set(names[in_ra & (d >= dec0) & (d < dec1)].tolist()))


def read_brick_table(path) -> np.ndarray:
    """BRICKNAME, RA, DEC of a brick table (``survey-bricks.fits.gz`` or a region's ``survey-bricks-dr9-<region>``),
    whatever the case of its column names."""
    import fitsio

    try:
        with fitsio.FITS(str(path)) as f:
            names = {c.lower(): c for c in f[1].get_colnames()}
            missing = [c for c in ("brickname", "ra", "dec") if c not in names]
            if missing:
                raise BrickSelectionError(f"{path}: brick table lacks columns {missing} (in either case)")
            return f[1].read(columns=[names["brickname"], names["ra"], names["dec"]])
    except BrickSelectionError:
        raise
    except Exception as err:  # fitsio raises OSError/ValueError for damaged or foreign files
        raise BrickSelectionError(f"cannot read BRICKNAME, RA, DEC from {path}: {fits_error(err)}") from err


def select_bricks(release: dict, synthetic: bool = False) -> list[str]:
    """The bricks named by the config's ``release.bricks``, in a stable order.

    ``release.bricks`` is a list of names, the path of a file of names, or a
    box ``{ra: [min, max], dec: [min, max]}``. A box selects from the brick
    tables of the chosen regions (``release.region``), which list the bricks
    with data there; where a region has none, from the release's whole-sky
    ``survey-bricks.fits.gz`` (its bricks without data are then reported
    missing); for the synthetic release before it is built, from the same
    brick grid it will write. Whether each brick's files exist is checked by
    the cutout jobs, which report missing bricks, never here: planning a run
    must not stat hundreds of thousands of files.
    """
    from realfake.inputs.layout import brick_tables, chosen_regions

    bricks = release["bricks"]
    if isinstance(bricks, str):
        return read_brick_list(bricks)
    if not isinstance(bricks, dict):
        names = [check_brick(b) for b in bricks]
        if len(set(names)) != len(names):
            raise BrickSelectionError(f"release.bricks: names listed twice: {sorted({b for b in names if names.count(b) > 1})}")
        return names
    root = Path(release["root"])
    regions = chosen_regions(root, release.get("region", "both")) if root.exists() else {}
    per_region, top = brick_tables(root, regions)
    named = [r for r in regions if r]
    if per_region and len(per_region) == len(named):
        tables = [(read_brick_table(t), t) for t in per_region]
    elif top.exists():
        tables = [(read_brick_table(top), top)]
        if named:
            log.warning("release.bricks is a box, and the regions %s have no survey-bricks-*-<region>.fits.gz: "
                        "bricks from %s (every brick of the sky; those without data will be listed as missing)",
                        named, top)
    elif synthetic:
        tables = [(brick_grid(), "the synthetic release's brick grid")]
    else:
        raise BrickSelectionError(f"release.bricks is an RA/Dec box, but the release's brick table is not there: {top}"
                                  + (f" (nor a survey-bricks-*-<region>.fits.gz in {', '.join(map(str, regions.values()))})"
                                     if named else ""))
    names = sorted(set().union(*(bricks_in_box(table, bricks["ra"], bricks["dec"]) for table, _ in tables)))
    if not names:
        raise BrickSelectionError(f"release.bricks: no brick of {', '.join(str(where) for _, where in tables)} is "
                                  f"centred in the box {bricks}")
    return names


def batch_bricks(bricks, batch_size: int) -> dict[str, list[str]]:
    """Group bricks into batches of at most ``batch_size``, one cutout job each.

    Batches never straddle a 1-degree RA column (the ``<AAA>`` folder of the
    release), so a batch reads neighbouring files, and adding bricks to the
    selection renames only batches of the columns it touches. Batch names are
    ``<AAA>-<k>``.
    """
    by_column: dict[str, list[str]] = {}
    for b in sorted(bricks):
        by_column.setdefault(b[:3], []).append(b)
    out = {}
    for col, names in by_column.items():
        for k in range(0, len(names), batch_size):
            out[f"{col}-{k // batch_size}"] = names[k : k + batch_size]
    return out
