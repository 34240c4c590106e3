"""Readers for the Tractor catalogues of a release and of an injection run's rerun (injection.py reads the
obiwan simulation catalogues into the same form).

Both return one pandas table in a common form: ``id, ra, dec, x, y`` (0-indexed
pixels), ``flux_<b>``, ``mw_transmission_<b>``, ``type``, ``size`` (half-light
radius, arcsec) plus what the selection needs. The Tractor schema is detected
from the columns (DR5: 4-character ``type``, ``shapeexp_r``/``shapedev_r``, no
``maskbits``; DR8: the same shapes and ``maskbits``; DR9+: ``shape_r``,
``maskbits``), never guessed from a path; column names in either case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from realfake import BANDS
from realfake.inputs import layout


class CatalogError(ValueError):
    """A catalogue that cannot be used; the message names the file and what is wrong."""


TRACTOR_COMMON = ["objid", "brick_primary", "type", "ra", "dec", "bx", "by"] + [
    f"{c}_{b}" for b in BANDS for c in ("flux", "flux_ivar", "mw_transmission", "nobs")
]
DR5_SHAPES = ["shapeexp_r", "shapedev_r", "fracdev"]
# maskbits values of ALLMASK_G/R/Z (DR8, DR9, DR10)
ALLMASK_BITS = {"g": 32, "r": 64, "z": 128}
# Observing conditions at a source (NaN where a catalogue lacks the column): what the verdict is binned by
CONDITIONS = [f"psfsize_{b}" for b in BANDS] + [f"nobs_{b}" for b in BANDS] + ["ebv"]


def native(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a


def read_table(path: Path, what: str) -> np.ndarray:
    import fitsio

    if not path.exists():
        raise CatalogError(f"{what} not found: {path}")
    try:
        return fitsio.read(str(path), ext=1)
    except Exception as err:  # fitsio raises OSError/IOError/ValueError for damaged files
        raise CatalogError(f"cannot read {what} {path}: {layout.fits_error(err)}") from err


def tractor_schema(columns, path) -> str:
    """The shape columns' family from the columns present: ``dr9+`` (``shape_r``) or ``dr5`` (DR5 and DR8:
    ``shapeexp_*``, ``shapedev_*``, ``fracdev``); CatalogError naming what is missing."""
    cols = set(c.lower() for c in columns)
    missing = [c for c in TRACTOR_COMMON if c not in cols]
    if missing:
        raise CatalogError(f"{path}: Tractor catalogue lacks columns {missing}")
    if "shape_r" in cols:
        return "dr9+"
    if all(c in cols for c in DR5_SHAPES):
        return "dr5"
    raise CatalogError(
        f"{path}: cannot tell the Tractor schema: expected shape_r (DR8+) or shapeexp_r/shapedev_r/fracdev (DR5)"
    )


def read_tractor(root: str | Path, brick: str, path: str | Path | None = None) -> pd.DataFrame:
    """The Tractor catalogue of ``brick`` in the common form: the release's, or (``path``) an injection run's rerun.

    Column names are read whatever their case. attrs: ``schema``, ``path`` and
    ``has_maskbits`` (DR5 has none: a maskbits cut on it is refused by the selection, or mapped from
    ``allmask_<b>`` where ``selection.maskbits_from_allmask`` says so).
    """
    path = Path(path) if path is not None else layout.tractor_file(root, brick)
    t = read_table(path, "Tractor catalogue")
    cols = {c.lower(): c for c in t.dtype.names}
    if any(c.startswith("decam_") for c in cols) and "flux_g" not in cols:
        raise CatalogError(f"{path}: a DR3-or-older Tractor catalogue (array columns decam_flux[6], ...): not "
                           "supported; use DR5 or later")
    schema = tractor_schema(cols, path)

    def col(name):
        return native(t[cols[name]])

    df = pd.DataFrame({c: col(c) for c in TRACTOR_COMMON})
    df["type"] = np.char.strip(col("type").astype("U4"))
    df = df.rename(columns={"objid": "id", "bx": "x", "by": "y"})
    if schema == "dr5":
        # DR5 and DR8 keep one shape per model; a composite has both, weighted by fracdev
        fracdev = col("fracdev").astype(float)
        rexp, rdev = col("shapeexp_r").astype(float), col("shapedev_r").astype(float)
        df["size"] = np.where(df["type"] == "DEV", rdev, np.where(df["type"] == "COMP", fracdev * rdev + (1 - fracdev) * rexp, rexp))
    else:
        df["size"] = col("shape_r").astype(float)
    df["maskbits"] = col("maskbits").astype(np.int64) if "maskbits" in cols else 0
    # DR5's allmask_<b> as the ALLMASK_<B> bits of DR8+ maskbits (for selection.maskbits_from_allmask)
    df["allmask_bits"] = np.zeros(len(df), np.int64)
    for b, bit in ALLMASK_BITS.items():
        if f"allmask_{b}" in cols:
            df["allmask_bits"] |= np.where(col(f"allmask_{b}") != 0, bit, 0)
    for c in CONDITIONS:
        if c not in df:
            df[c] = col(c).astype(np.float32) if c in cols else np.float32(np.nan)
    df.attrs.update(schema=schema if schema == "dr9+" else ("dr8" if "maskbits" in cols else "dr5"), path=str(path),
                    has_maskbits="maskbits" in cols)
    return df


def nearest_rows(catalogue: pd.DataFrame, x, y) -> np.ndarray:
    """The row of ``catalogue`` (x, y in pixels) nearest to each position (x, y) of the same brick."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([catalogue["x"], catalogue["y"]]))
    return tree.query(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))[1]


def magnitudes(df: pd.DataFrame) -> pd.DataFrame:
    """Extinction-corrected AB magnitudes ``mag_<b>``; NaN where the flux is not positive."""
    out = {}
    for b in BANDS:
        flux = df[f"flux_{b}"].to_numpy(float) / df[f"mw_transmission_{b}"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"mag_{b}"] = np.where(flux > 0, 22.5 - 2.5 * np.log10(np.where(flux > 0, flux, 1)), np.nan)
    return pd.DataFrame(out, index=df.index)
