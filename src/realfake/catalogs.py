"""Readers for the Tractor catalogues of a release and the obiwan simulation catalogues.

Both return one pandas table in a common form: ``id, ra, dec, x, y`` (0-indexed
pixels), ``flux_<b>``, ``mw_transmission_<b>``, ``type``, ``size`` (half-light
radius, arcsec) plus what the selection needs. The Tractor schema is detected
from the columns (DR5: 4-character ``type``, ``shapeexp_r``/``shapedev_r``;
DR8+: ``shape_r``, ``maskbits``), never guessed from a path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import BANDS, layout


class CatalogError(ValueError):
    """A catalogue that cannot be used; the message names the file and what is wrong."""


TRACTOR_COMMON = ["objid", "brick_primary", "type", "ra", "dec", "bx", "by"] + [
    f"{c}_{b}" for b in BANDS for c in ("flux", "flux_ivar", "mw_transmission", "nobs")
]
DR5_SHAPES = ["shapeexp_r", "shapedev_r", "fracdev"]
# Observing conditions at a source (NaN where a catalogue lacks the column): what the verdict is binned by
CONDITIONS = [f"psfsize_{b}" for b in BANDS] + [f"nobs_{b}" for b in BANDS] + ["ebv"]
SIMCAT_COLUMNS = ["id", "ra", "dec", "x", "y"] + [f"{b}flux" for b in BANDS] + ["rhalf"]


def _native(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a


def _read_table(path: Path, what: str) -> np.ndarray:
    import fitsio

    if not path.exists():
        raise CatalogError(f"{what} not found: {path}")
    try:
        return fitsio.read(str(path), ext=1)
    except Exception as err:  # fitsio raises OSError/IOError/ValueError for damaged files
        raise CatalogError(f"cannot read {what} {path}: {layout.fits_error(err)}") from err


def tractor_schema(columns, path) -> str:
    """``dr8+`` or ``dr5`` from the columns present; CatalogError naming what is missing."""
    cols = set(c.lower() for c in columns)
    missing = [c for c in TRACTOR_COMMON if c not in cols]
    if missing:
        raise CatalogError(f"{path}: Tractor catalogue lacks columns {missing}")
    if "shape_r" in cols:
        return "dr8+"
    if all(c in cols for c in DR5_SHAPES):
        return "dr5"
    raise CatalogError(
        f"{path}: cannot tell the Tractor schema: expected shape_r (DR8+) or shapeexp_r/shapedev_r/fracdev (DR5)"
    )


def read_tractor(root: str | Path, brick: str) -> pd.DataFrame:
    """The release's Tractor catalogue of ``brick`` in the common form."""
    path = layout.tractor_file(root, brick)
    t = _read_table(path, "Tractor catalogue")
    schema = tractor_schema(t.dtype.names, path)
    df = pd.DataFrame({c: _native(t[c]) for c in TRACTOR_COMMON})
    df["type"] = np.char.strip(t["type"].astype("U4"))
    df = df.rename(columns={"objid": "id", "bx": "x", "by": "y"})
    if schema == "dr5":
        # DR5 keeps one shape per model; a composite has both, weighted by fracdev
        fracdev = _native(t["fracdev"]).astype(float)
        rexp, rdev = _native(t["shapeexp_r"]).astype(float), _native(t["shapedev_r"]).astype(float)
        df["size"] = np.where(df["type"] == "DEV", rdev, np.where(df["type"] == "COMP", fracdev * rdev + (1 - fracdev) * rexp, rexp))
    else:
        df["size"] = _native(t["shape_r"]).astype(float)
    df["maskbits"] = _native(t["maskbits"]).astype(np.int64) if "maskbits" in t.dtype.names else 0
    for c in CONDITIONS:
        if c not in df:
            df[c] = _native(t[c]).astype(np.float32) if c in t.dtype.names else np.float32(np.nan)
    df.attrs.update(schema=schema, path=str(path))
    return df


def read_simcat(root: str | Path, brick: str, rs: str) -> pd.DataFrame:
    """The injected sources of one obiwan run, restricted to those actually added when known."""
    path = layout.simcat_file(root, brick, rs)
    t = _read_table(path, "obiwan simulation catalogue")
    missing = [c for c in SIMCAT_COLUMNS if c not in t.dtype.names]
    if missing:
        raise CatalogError(f"{path}: simulation catalogue lacks columns {missing}")
    df = pd.DataFrame({c: _native(t[c]) for c in SIMCAT_COLUMNS})
    # obiwan's x, y are 1-indexed (FITS); everything downstream is 0-indexed like Tractor's bx, by
    df["x"] = df["x"].astype(float) - 1
    df["y"] = df["y"].astype(float) - 1
    for b in BANDS:
        df = df.rename(columns={f"{b}flux": f"flux_{b}"})
        mw = f"mw_transmission_{b}"
        df[mw] = _native(t[mw]) if mw in t.dtype.names else 1.0
    df = df.rename(columns={"rhalf": "size"})
    # obiwan's simcat has no type; a synthetic null-test run's does (the Tractor type of a real twin)
    df["type"] = np.char.strip(t["type"].astype("U4")) if "type" in t.dtype.names else "SIM"
    added = layout.sim_ids_added_file(root, brick, rs)
    n_listed = len(df)
    if added.exists():
        ids = _read_table(added, "list of injected ids")
        col = ids.dtype.names[0]
        df = df[df["id"].isin(_native(ids[col]))].reset_index(drop=True)
    df.attrs.update(path=str(path), n_listed=n_listed, ids_added=str(added) if added.exists() else None,
                    has_type="type" in t.dtype.names)
    return df


def magnitudes(df: pd.DataFrame) -> pd.DataFrame:
    """Extinction-corrected AB magnitudes ``mag_<b>``; NaN where the flux is not positive."""
    out = {}
    for b in BANDS:
        flux = df[f"flux_{b}"].to_numpy(float) / df[f"mw_transmission_{b}"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"mag_{b}"] = np.where(flux > 0, 22.5 - 2.5 * np.log10(np.where(flux > 0, flux, 1)), np.nan)
    return pd.DataFrame(out, index=df.index)
