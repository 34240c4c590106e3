"""Where files live in a Legacy Survey Data Release and in an obiwan injection run.

One place for every path template, so the readers, the synthetic release and
the Snakefile agree on the on-disk layout (see README, "Input layout").
"""

from __future__ import annotations

import re
from pathlib import Path

BRICK_RE = re.compile(r"^\d{4}[pm]\d{3}$")
RS_RE = re.compile(r"^rs\d+$")


def check_brick(brick: str) -> str:
    """Return ``brick`` if it is a Data Release brick name, else raise ValueError."""
    if not isinstance(brick, str) or not BRICK_RE.match(brick):
        raise ValueError(
            f"not a brick name: {brick!r} (expected RA*10 as 4 digits, p/m, |Dec|*10 as 3 digits, e.g. 1211p060)"
        )
    return brick


def check_rs(rs: str) -> str:
    if not isinstance(rs, str) or not RS_RE.match(rs):
        raise ValueError(f"not an injection seed folder: {rs!r} (expected rs<N>, e.g. rs0)")
    return rs


def survey_bricks(root: str | Path) -> Path:
    return Path(root) / "survey-bricks.fits.gz"


def coadd_dir(root: str | Path, brick: str, rs: str | None = None) -> Path:
    d = Path(root) / "coadd" / brick[:3] / check_brick(brick)
    return d / check_rs(rs) if rs is not None else d


def coadd_file(root: str | Path, brick: str, kind: str, band: str, rs: str | None = None) -> Path:
    """``kind`` is ``image`` or ``invvar``; ``rs`` selects an injection run's coadd."""
    if kind not in ("image", "invvar"):
        raise ValueError(f"coadd kind must be image or invvar, not {kind!r}")
    return coadd_dir(root, brick, rs) / f"legacysurvey-{brick}-{kind}-{band}.fits.fz"


def coadd_files(root: str | Path, brick: str, rs: str | None = None) -> list[Path]:
    """The six coadd files of a brick (or of an injection run of it): image then invvar, in g, r, z."""
    from . import BANDS

    return [coadd_file(root, brick, kind, band, rs) for band in BANDS for kind in ("image", "invvar")]


def tractor_file(root: str | Path, brick: str, rs: str | None = None) -> Path:
    if rs is None:
        return Path(root) / "tractor" / brick[:3] / f"tractor-{check_brick(brick)}.fits"
    return Path(root) / "tractor" / brick[:3] / check_brick(brick) / check_rs(rs) / f"tractor-{brick}.fits"


def obiwan_dir(root: str | Path, brick: str, rs: str) -> Path:
    return Path(root) / "obiwan" / brick[:3] / check_brick(brick) / check_rs(rs)


def simcat_file(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan_dir(root, brick, rs) / f"simcat-elg-{brick}.fits"


def sim_ids_added_file(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan_dir(root, brick, rs) / "sim_ids_added.fits"


def skipped_ids_file(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan_dir(root, brick, rs) / f"skippedids-elg-{brick}.fits"


def metacat_file(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan_dir(root, brick, rs) / f"metacat-elg-{brick}.fits"


def fits_error(err: Exception) -> str:
    """cfitsio's multi-line error stack as one line a user can act on."""
    import re

    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    first = re.sub(r"^FITSIO status = \d+: ", "", lines[0]) if lines else type(err).__name__
    if any("end of file" in ln for ln in lines):
        return f"truncated or damaged file ({first})"
    return first
