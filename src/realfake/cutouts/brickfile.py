"""Bricks to cutouts: 64x64 stamps of g, r, z images and inverse variances, one HDF5 file per brick.

HDF5 layout (also written into the file's own attributes):

- ``cutouts``: (N, S, S, C) float32, chunked one example per chunk; channel
  order in the attribute ``channels``.
- ``labels``: (N,) int8, real = 0, fake = 1.
- ``sources``: one row per cutout (id, brick, region, rs, ra, dec, x, y,
  fluxes, extinction-corrected magnitudes, type, size, label, frac_nodata,
  the coadds it was cut from (``coadds``: a seed folder, or ``release``),
  observing conditions); a fake's are its measured values where its run has a
  rerun Tractor catalogue.
- ``offedge``: the sources whose cutout falls off the image, set aside.
- ``processing`` (where the reals were cut from an injection run's coadds): per real galaxy away from injected
  sources, its stamp's statistics in the release's coadds (``rel_``) and in the run's (``inj_``): the processing
  check's data (realfake.cutouts.processing).
- ``cuts``: per catalogue, sources in, removed by each cut (for fakes: not
  injected, not detected in the rerun catalogue, then the reals' cuts), off
  the edge, kept; per injection run whether it was measured, its extinction
  derived, or it was absent.
- attributes: the brick's region, its injection layout, seed folders read and absent, where the reals were cut
  from (``reals_from``, ``reals_coadds``; ``reals_fallback``: why the release's, where it was asked otherwise)
  and the neighbour rule's radius (arcsec).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd

from realfake import BANDS, __version__
from realfake.atomic import atomic_path
from realfake.inputs.catalogs import CONDITIONS

# The docstring above is the format's description, written verbatim into every file (attribute ``layout``): to
# change it is to change the files.

# The channel order of config/config.yaml (cutouts.channels); a file names its own in the attribute ``channels``
DEFAULT_CHANNELS = ("g", "ivar_g", "r", "ivar_r", "z", "ivar_z")
SOURCE_COLUMNS = (
    ["id", "brick", "region", "rs", "ra", "dec", "x", "y"]
    + [f"flux_{b}" for b in BANDS]
    + [f"mag_{b}" for b in BANDS]
    + ["type", "size", "label", "frac_nodata", "coadds"]
    + CONDITIONS
)


def _records(df: pd.DataFrame) -> np.ndarray:
    """A DataFrame as an HDF5-friendly structured array (strings as fixed-width bytes)."""
    cols = []
    for c in df.columns:
        v = df[c].to_numpy()
        if v.dtype == object or v.dtype.kind == "U" or str(df[c].dtype) in ("string", "str"):
            v = np.asarray(df[c].astype(str).to_numpy(), dtype="S")
        cols.append((c, v))
    out = np.empty(len(df), dtype=[(c, v.dtype) for c, v in cols])
    for c, v in cols:
        out[c] = v
    return out


@contextlib.contextmanager
def brick_writer(path, size: int, channels, attrs: dict):
    """Open one brick's HDF5 file for writing, atomically: yields (append(stamps), finish(tables...))."""
    import h5py

    shape = (size, size, len(channels))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        # Each one-stamp chunk goes to the file in its own pwrite (96 KB for 64x64x6). Keep it so: on this
        # project's VMs, writes of 1 MB and more into new page-cache pages took 1.4 to 10 times as long
        # (benchmarks/cutouts.py)
        d = f.create_dataset("cutouts", shape=(0,) + shape, maxshape=(None,) + shape, chunks=(1,) + shape,
                             dtype="<f4")
        d.attrs["channels"] = list(channels)

        def append(stamps):
            n = d.shape[0]
            d.resize(n + len(stamps), axis=0)
            # A stamp is a whole unfiltered chunk: written as it lies in memory, without HDF5's copy of it
            # through its chunk cache (a dense brick's 300 MB: 0.10 s instead of 0.13 s)
            stamps = np.ascontiguousarray(stamps, dtype="<f4")
            for i, stamp in enumerate(stamps, start=n):
                d.id.write_direct_chunk((i, 0, 0, 0), stamp)

        def finish(sources, offedge, cuts, files, processing=None):
            if processing is not None:
                f.create_dataset("processing", data=_records(processing))
            f.create_dataset("labels", data=sources["label"].to_numpy(np.int8))
            f.create_dataset("sources", data=_records(sources))
            f.create_dataset("offedge", data=_records(offedge))
            f.create_dataset("cuts", data=_records(cuts.fillna(0)))
            f.attrs.update(channels=list(channels), cutout_size=size, pixscale_arcsec=0.262, labels="real=0, fake=1",
                           source_files=files, code_version=__version__, layout=__doc__, **attrs)

        yield append, finish


def write_brick(path, stamps, sources, offedge, cuts, files, channels, attrs: dict):
    """Write one brick's HDF5 file atomically from its (N, S, S, C) stamps."""
    with brick_writer(path, stamps.shape[1], channels, attrs) as (append, finish):
        append(stamps)
        finish(sources, offedge, cuts, files)


def read_table(path, name: str = "sources") -> pd.DataFrame:
    """One table of a brick file (``sources``, ``offedge`` or ``cuts``), strings decoded."""
    import h5py

    with h5py.File(path, "r") as f:
        rec = f[name][()]
    df = pd.DataFrame(rec)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].str.decode("ascii")
    return df


def read_sources(path) -> pd.DataFrame:
    """The per-cutout source table of a brick file, strings decoded."""
    return read_table(path, "sources")
