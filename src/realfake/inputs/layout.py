"""Where files live in a Legacy Survey Data Release and in an obiwan injection run.

One place for every path template, so the readers, the synthetic release and
the Snakefile agree on the on-disk layout (docs/inputs.md, "Input layout read").

obiwan changed its output layout over the years (docs/inputs.md); each layout is
described once, in ``LAYOUTS`` below: where a brick's seed folders lie and how
they are named, where each seed folder's simulation catalogue, coadds and rerun
Tractor catalogue are, which columns hold what, and whether pixel positions
count from 0 or 1 (realfake.inputs.injection reads them).

- ``obiwan2018`` (legacysurvey/obiwan master): ``obiwan/<AAA>/<brick>/<rsdir>/simcat-elg-<brick>.fits``,
  ``coadd/<AAA>/<brick>/<rsdir>/``, ``tractor/<AAA>/<brick>/<rsdir>/tractor-<brick>.fits``; ``<rsdir>`` is
  ``rs<N>``, ``skip_rs<N>``, ``more_rs<N>`` or ``more_skip_rs<N>`` (N: a start row of the randoms table);
  x, y 1-indexed; ``sim_ids_added.fits`` lists the ids actually injected.
- ``obiwan2017`` (before Nov 2017): ``elg/<AAA>/<brick>/rs<N>/{obiwan,coadd,tractor}/``; a simcat
  without ``mw_transmission_*``; the coadds of rs != 0 were deleted after the run.
- ``obiwan2021`` (adematti/obiwan, DR9 era): ``obiwan/<AAA>/<brick>/file<F>_rs<R>_skip<S>/randoms-<brick>.fits``
  with ``flux_g/r/z``, ``shape_r``, 0-indexed ``bx``, ``by`` and ``collided`` (not injected); coadds and
  rerun catalogue in folders of the same name under ``coadd/`` and ``tractor/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from realfake import BANDS

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
    """``rs`` selects an injection run's coadd (obiwan's 2018 layout; LAYOUTS has every layout)."""
    return coadd_dir(root, brick, rs) / coadd_name(brick, kind, band)


def coadd_files(root: str | Path, brick: str, rs: str | None = None) -> list[Path]:
    """The six coadd files of a brick (or of an injection run of it): image then invvar, in g, r, z."""
    return [coadd_file(root, brick, kind, band, rs) for band in BANDS for kind in ("image", "invvar")]


def tractor_file(root: str | Path, brick: str, rs: str | None = None) -> Path:
    """A release's Tractor catalogue of ``brick``, or (``rs``) the rerun catalogue of an obiwan 2018 run's seed
    folder."""
    if rs is not None:
        return obiwan2018_run(root, brick, rs).rerun_tractor
    return Path(root) / "tractor" / brick[:3] / f"tractor-{check_brick(brick)}.fits"


def obiwan2018_run(root: str | Path, brick: str, rs: str):
    """One seed folder of an obiwan run in its 2018 layout (LAYOUTS describes it, and the others)."""
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


# --------------------------------------------------------------------------- obiwan injection runs


@dataclass(frozen=True)
class Layout:
    """Where one obiwan layout keeps a brick's runs, and what its simulation catalogue's columns mean."""

    name: str
    seeds: str  # the folder whose subfolders are a brick's seed folders ({aaa}: first 3 characters of {brick})
    seed_re: str  # a seed folder's name
    simcat: str  # these three below a seed folder ({rs})
    coadd: str
    tractor: str
    columns: dict  # common name -> the catalogue's column (lower case)
    one_indexed: bool  # x, y count from 1 (FITS, astrometry's radec2pixelxy) rather than 0 (Tractor's bx, by)
    ids_added: str | None = None  # a table of the ids actually injected
    not_injected: str | None = None  # a boolean column: true where a random was not injected
    optional: tuple = ()  # common names a catalogue may lack (an id: then the row number)

    def path(self, template: str, root, brick: str, rs: str = "") -> Path:
        return Path(root) / template.format(aaa=brick[:3], brick=brick, rs=rs)

    def seed_folders(self, root, brick: str) -> list[str]:
        """The seed folders of ``brick`` on disk, in a natural order (rs0, rs500, ..., more_rs0, ...)."""
        d = self.path(self.seeds, root, brick)
        if not d.is_dir():
            return []
        names = [p.name for p in d.iterdir() if p.is_dir() and re.fullmatch(self.seed_re, p.name)]
        return sorted(names, key=seed_sort_key)


def _flux_columns(template: str) -> dict:
    return {f"flux_{b}": template.format(b=b) for b in BANDS}


_COMMON_2018 = {"id": "id", "ra": "ra", "dec": "dec", "x": "x", "y": "y", "size": "rhalf", **_flux_columns("{b}flux")}
LAYOUTS = {
    "obiwan2018": Layout(
        name="obiwan2018",
        seeds="obiwan/{aaa}/{brick}",
        seed_re=r"(more_)?(skip_)?rs\d+",
        simcat="obiwan/{aaa}/{brick}/{rs}/simcat-elg-{brick}.fits",
        coadd="coadd/{aaa}/{brick}/{rs}",
        tractor="tractor/{aaa}/{brick}/{rs}/tractor-{brick}.fits",
        columns={**_COMMON_2018, **{f"mw_transmission_{b}": f"mw_transmission_{b}" for b in BANDS}},
        one_indexed=True,
        ids_added="obiwan/{aaa}/{brick}/{rs}/sim_ids_added.fits",
    ),
    "obiwan2017": Layout(
        name="obiwan2017",
        seeds="elg/{aaa}/{brick}",
        seed_re=r"rs\d+",
        simcat="elg/{aaa}/{brick}/{rs}/obiwan/simcat-elg-{brick}.fits",
        coadd="elg/{aaa}/{brick}/{rs}/coadd",
        tractor="elg/{aaa}/{brick}/{rs}/tractor/tractor-{brick}.fits",
        columns=_COMMON_2018,
        one_indexed=True,
    ),
    "obiwan2021": Layout(
        name="obiwan2021",
        seeds="obiwan/{aaa}/{brick}",
        seed_re=r"file\d+_rs\d+_skip\d+",
        simcat="obiwan/{aaa}/{brick}/{rs}/randoms-{brick}.fits",
        coadd="coadd/{aaa}/{brick}/{rs}",
        tractor="tractor/{aaa}/{brick}/{rs}/tractor-{brick}.fits",
        columns={"id": "id", "ra": "ra", "dec": "dec", "x": "bx", "y": "by", "size": "shape_r",
                 **_flux_columns("flux_{b}")},
        one_indexed=False,
        not_injected="collided",
        optional=("id",),  # (the randoms are listed in id order)
    ),
}
LAYOUT_NAMES = tuple(LAYOUTS)


def seed_sort_key(name: str):
    """rs0 < rs500 < rs1000 < skip_rs0 < more_rs0 ...; file0_rs0_skip0 < file0_rs500_skip0 < file0_rs0_skip1."""
    numbers = [int(n) for n in re.findall(r"\d+", name)]
    prefix = re.sub(r"\d+", "#", name)
    if prefix.startswith("file"):  # file<F>_rs<R>_skip<S>: by file, skip, then start row
        numbers = [numbers[0], numbers[2], numbers[1]]
    return (prefix.count("_") if not prefix.startswith("file") else 0, prefix, numbers)


@dataclass(frozen=True)
class Run:
    """One seed folder of one brick: where its catalogue, coadds and rerun Tractor catalogue are."""

    root: Path
    brick: str
    rs: str
    layout: Layout

    @property
    def simcat(self) -> Path:
        """The run's simulation catalogue: ``simcat-elg-<brick>.fits``, or the one ``simcat-<objtype>-<brick>.fits``
        of a run of another object type (lrg, qso, star)."""
        path = self.layout.path(self.layout.simcat, self.root, self.brick, self.rs)
        if not path.exists() and "simcat-elg-" in path.name:
            others = sorted(path.parent.glob(f"simcat-*-{self.brick}.fits"))
            if len(others) == 1:
                return others[0]
        return path

    @property
    def coadd_dir(self) -> Path:
        return self.layout.path(self.layout.coadd, self.root, self.brick, self.rs)

    @property
    def rerun_tractor(self) -> Path:
        return self.layout.path(self.layout.tractor, self.root, self.brick, self.rs)

    @property
    def ids_added(self) -> Path | None:
        return self.layout.path(self.layout.ids_added, self.root, self.brick, self.rs) if self.layout.ids_added else None

    def absent(self) -> str | None:
        """Why this run cannot give cutouts (its catalogue or coadd folder absent), or None."""
        if not self.simcat.exists():
            return f"no simulation catalogue ({self.simcat})"
        if not self.coadd_dir.is_dir():
            return f"no coadd folder ({self.coadd_dir}; obiwan's 2017 runs deleted those of rs != 0)"
        return None
