"""Where files live in a Legacy Survey Data Release and in an obiwan injection run.

One place for every path template, so the readers, the synthetic release and
the Snakefile agree on the on-disk layout (docs/inputs.md, "Input layout read").
"""

from __future__ import annotations

import re
from pathlib import Path

BRICK_RE = re.compile(r"^\d{4}[pm]\d{3}$")
REGIONS = ("north", "south")  # DR9: north (BASS + MzLS) and south (DECaLS); DR10: south
# DR9 takes a brick's photometry from the north at Dec >= 32.375 (the boundary of its two regions)
NORTH_DEC_MIN = 32.375
OVERLAP_RULES = ("dec", "north", "south")


def check_brick(brick: str) -> str:
    """Return ``brick`` if it is a Data Release brick name, else raise ValueError."""
    if not isinstance(brick, str) or not BRICK_RE.match(brick):
        raise ValueError(
            f"not a brick name: {brick!r} (expected RA*10 as 4 digits, p/m, |Dec|*10 as 3 digits, e.g. 1211p060)"
        )
    return brick


def survey_bricks(root: str | Path) -> Path:
    return Path(root) / "survey-bricks.fits.gz"


def regions_of(root: str | Path) -> dict[str, Path]:
    """Region name -> folder of a release (or injection run) root.

    A folder with region subfolders (DR9: ``north/``, ``south/``; DR10:
    ``south/``) gives those; one region folder gives ``{"north": root}`` or
    ``{"south": root}``; a single-tree release (DR5, DR8) ``{"": root}``.
    """
    root = Path(root)
    found = {r: root / r for r in REGIONS if (root / r).is_dir()}
    if found:
        return found
    return {root.name if root.name in REGIONS else "": root}


def chosen_regions(root: str | Path, region: str = "both") -> dict[str, Path]:
    """The regions of ``root`` that ``release.region`` (north | south | both) selects; ValueError if none."""
    regions = regions_of(root)
    if region == "both" or list(regions) == [""]:
        return regions
    if region not in regions:
        raise ValueError(f"release.region is {region}, but {root} has no {region} region (it has: "
                         f"{', '.join(r for r in regions)})")
    return {region: regions[region]}


def brick_tables(root: str | Path, regions: dict[str, Path]) -> tuple[list[Path], Path]:
    """(per-region brick tables of the chosen regions, the release's whole-sky ``survey-bricks.fits.gz``).

    A DR9 release keeps ``survey-bricks.fits.gz`` (every brick of the sky) at
    its top, above the regions, and ``survey-bricks-dr9-<region>.fits.gz`` (the
    bricks with data there) in each region; ``root`` may be either level.
    """
    root = Path(root)
    per_region = []
    for name, folder in regions.items():
        if name:
            per_region += sorted(folder.glob(f"survey-bricks-*-{name}.fits.gz"))[:1]
    top = survey_bricks(root)
    if not top.exists() and root.name in REGIONS:
        top = survey_bricks(root.parent)
    return per_region, top


def brick_dec(brick: str) -> float:
    """A brick's Dec (deg) from its name: |Dec| x 10 truncated, so within 0.1 deg."""
    check_brick(brick)
    return (-1 if brick[4] == "m" else 1) * int(brick[5:]) / 10.0


def resolve_region(brick: str, regions: dict[str, Path], overlap: str = "dec") -> tuple[str | None, list[str]]:
    """(the region whose files a brick is cut from, the regions that have it), by ``release.region_overlap``.

    A brick with a Tractor catalogue in two regions (DR9's overlap near Dec
    32.4) is taken once: ``dec`` from the north at Dec >= 32.375 and the south
    below (DR9's own rule), or always ``north`` / ``south``. None when no region has it.
    """
    have = [r for r, folder in regions.items() if tractor_file(folder, brick).exists()]
    if len(have) <= 1:
        return (have[0] if have else None), have
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"release.region_overlap must be one of {OVERLAP_RULES}, not {overlap!r}")
    if overlap == "dec":
        return ("north" if brick_dec(brick) >= NORTH_DEC_MIN else "south"), have
    return overlap, have


def injection_folder(injection_root: str | Path, region: str) -> Path | None:
    """The injection run's folder for a brick of ``region``: its region subfolder where the run has them
    (None if not that one), else the run's root."""
    regions = regions_of(injection_root)
    if "" in regions or not region:
        return regions.get("", Path(injection_root))
    return regions.get(region)


def coadd_dir(root: str | Path, brick: str, rs: str | None = None) -> Path:
    """A release's coadd folder of ``brick``, or (``rs``) that of one seed folder of an obiwan 2018 run."""
    if rs is not None:
        return obiwan2018_run(root, brick, rs).coadd_dir
    return Path(root) / "coadd" / brick[:3] / check_brick(brick)


def coadd_name(brick: str, kind: str, band: str) -> str:
    """``kind`` is ``image`` or ``invvar``."""
    if kind not in ("image", "invvar"):
        raise ValueError(f"coadd kind must be image or invvar, not {kind!r}")
    return f"legacysurvey-{brick}-{kind}-{band}.fits.fz"


def coadd_file(root: str | Path, brick: str, kind: str, band: str, rs: str | None = None) -> Path:
    """``rs`` selects an injection run's coadd (obiwan's 2018 layout; injection.LAYOUTS has every layout)."""
    return coadd_dir(root, brick, rs) / coadd_name(brick, kind, band)


def coadd_files(root: str | Path, brick: str, rs: str | None = None) -> list[Path]:
    """The six coadd files of a brick (or of an injection run of it): image then invvar, in g, r, z."""
    from . import BANDS

    return [coadd_file(root, brick, kind, band, rs) for band in BANDS for kind in ("image", "invvar")]


def tractor_file(root: str | Path, brick: str, rs: str | None = None) -> Path:
    """A release's Tractor catalogue of ``brick``, or (``rs``) the rerun catalogue of an obiwan 2018 run's seed
    folder."""
    if rs is not None:
        return obiwan2018_run(root, brick, rs).rerun_tractor
    return Path(root) / "tractor" / brick[:3] / f"tractor-{check_brick(brick)}.fits"


def obiwan2018_run(root: str | Path, brick: str, rs: str):
    """One seed folder of an obiwan run in its 2018 layout (injection.LAYOUTS describes it, and the others)."""
    from .injection import LAYOUTS, Run

    lay = LAYOUTS["obiwan2018"]
    if not isinstance(rs, str) or not re.fullmatch(lay.seed_re, rs):
        raise ValueError(f"not a seed folder of obiwan's 2018 layout: {rs!r} (expected rs<N>, skip_rs<N>, more_rs<N> "
                         "or more_skip_rs<N>)")
    return Run(Path(root), check_brick(brick), rs, lay)


def obiwan_dir(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan2018_run(root, brick, rs).simcat.parent


def simcat_file(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan2018_run(root, brick, rs).simcat


def sim_ids_added_file(root: str | Path, brick: str, rs: str) -> Path:
    return obiwan2018_run(root, brick, rs).ids_added


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
