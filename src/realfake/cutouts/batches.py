"""Cutout jobs at survey scale: a batch of bricks per job, a failure policy, and the run's summary tables.

A batch directory (one Snakemake job's output) holds ``<brick>.h5`` for every
brick that was cut, ``cuts.csv`` (per brick and catalogue: sources in, removed
by each cut, off the edge, without data, kept) and ``failures.csv`` (brick,
status ``missing`` or ``failed``, reason). A brick whose files are absent is
``missing``; one whose files cannot be used (truncated or corrupt FITS, a
missing band, missing columns, positions that disagree with the WCS) is
``failed``. The config's policy (``cutouts.on_missing``, ``cutouts.on_error``)
decides whether either skips the brick with its record or fails the job.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from realfake.inputs import fitstiles
from realfake.cutouts import stamps
from realfake.atomic import Settler, atomic_path, settle
from realfake.cutouts.brickfile import DEFAULT_CHANNELS
from realfake.inputs.catalogs import CatalogError
from realfake.inputs.coadds import CoaddError
from realfake.cutouts.cut import make_brick_file
from realfake.inputs.injection import plan_brick
from realfake.schema import schema_defaults

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ["brick", "status", "reason"]
POLICIES = ("skip", "fail")


class BrickError(RuntimeError):
    """A brick that the policy says must fail the job; the message names the brick and the reason."""


# The schema's defaults (its one home) of the release: and cutouts: keys a cutout job reads
_RELEASE, _CUTOUTS = schema_defaults("release"), schema_defaults("cutouts")


@dataclass
class CutoutSettings:
    """Everything a cutout job needs besides the brick names (the config's release/selection/cutouts).

    The defaults are the schema's; ``size`` and ``channels``, which the schema
    requires, default to config/config.yaml's values for callers without a config.
    """

    release_root: str
    injection_root: str
    rs: list | str  # "all", or names and patterns of seed folders
    selection: dict
    region: str = _RELEASE["region"]
    region_overlap: str = _RELEASE["region_overlap"]
    injection_layout: str = _RELEASE["injection_layout"]
    size: int = 64
    channels: tuple = DEFAULT_CHANNELS
    max_frac_nodata: float = _CUTOUTS["max_frac_nodata"]
    reals_from: str = _CUTOUTS["reals_from"]
    neighbour_radius: float = _CUTOUTS["neighbour_radius"]
    on_missing: str = _CUTOUTS["on_missing"]
    on_error: str = _CUTOUTS["on_error"]
    config_hash: str = ""

    @classmethod
    def from_config(cls, config: dict, config_hash: str = "", **policy) -> "CutoutSettings":
        """From the config's release, selection and cutouts blocks; ``policy`` overrides on_missing/on_error."""
        rel, cut = {**_RELEASE, **config["release"]}, {**_CUTOUTS, **config["cutouts"]}
        return cls(
            release_root=rel["root"],
            injection_root=rel["injection_root"],
            rs=rel["rs"] if rel["rs"] == "all" else list(rel["rs"]),
            selection=config["selection"],
            region=rel["region"],
            region_overlap=rel["region_overlap"],
            injection_layout=rel["injection_layout"],
            size=cut["size"],
            channels=tuple(cut["channels"]),
            max_frac_nodata=cut["max_frac_nodata"],
            reals_from=cut["reals_from"],
            neighbour_radius=cut["neighbour_radius"],
            on_missing=policy.get("on_missing", cut["on_missing"]),
            on_error=policy.get("on_error", cut["on_error"]),
            config_hash=config_hash,
        )


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation rather than give it back to the kernel.

    By default every decompressed plane (52 MB at 3600x3600) is a fresh mmap
    whose pages the kernel must fault in and zero: 0.46 s of system time a
    dense brick on this project's VMs, 0.01 s with each plane reusing the pages
    of the last. The job's peak memory is about the same. Returns whether it
    applied (not where malloc is not glibc's).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30))


def cut_brick(brick: str, out_dir: str, s: CutoutSettings) -> dict:
    """Cut one brick into ``out_dir/<brick>.h5``; a record of what happened, for the batch's tables."""
    t0 = time.time()
    keep_freed_memory()  # (cheap; here, so that it holds in every process that cuts, however started)
    try:
        plan = plan_brick(brick, s.release_root, s.injection_root, s.rs, s.region, s.region_overlap,
                          s.injection_layout)
    except ValueError as err:  # (LayoutError: runs of two layouts, or not the one named; a region not there)
        return dict(brick=brick, status="failed", reason=str(err))
    why = plan.missing()
    if why:
        return dict(brick=brick, status="missing", reason=why)
    try:
        cuts = make_brick_file(Path(out_dir) / f"{brick}.h5", brick, s.release_root, s.injection_root, s.rs,
                               s.selection, s.size, s.channels, config_hash=s.config_hash,
                               max_frac_nodata=s.max_frac_nodata, plan=plan, reals_from=s.reals_from,
                               neighbour_radius=s.neighbour_radius)
    except (CoaddError, CatalogError) as err:
        return dict(brick=brick, status="failed", reason=str(err))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(brick=brick, status="ok", cuts=cuts, seconds=time.time() - t0, peak_rss_mb=rss_mb)


def _enforce(rec: dict, s: CutoutSettings) -> None:
    policy = s.on_missing if rec["status"] == "missing" else s.on_error
    if rec["status"] != "ok" and policy == "fail":
        key = "cutouts.on_missing" if rec["status"] == "missing" else "cutouts.on_error"
        raise BrickError(f"brick {rec['brick']} {rec['status']}: {rec['reason']} ({key} is 'fail')")


def run_batch(bricks, out_dir, s: CutoutSettings, workers: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut every brick of a batch, ``workers`` bricks at a time; write the batch's cuts.csv and failures.csv.

    Memory is bounded by ``workers`` bricks (each read once, then released).
    Progress is logged per brick with the rate and the expected time left.
    """
    for p in ("on_missing", "on_error"):
        if getattr(s, p) not in POLICIES:
            raise ValueError(f"cutouts.{p} must be one of {POLICIES}, not {getattr(s, p)!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bricks = list(bricks)
    t0, records = time.time(), []
    workers = max(1, min(workers, len(bricks)))
    if stamps._stamps is None:
        log.warning("realfake.cutouts._stamps (C) was not built at install: stamps are cut with numpy, the same stamps "
                    "about 0.1 s slower per full-size brick (pip install -e . -v shows why it was not built)")
    # fitstiles' start-up check, once for the job (its warning, if any, once in the log), handed to the workers
    checked = fitstiles.decoder()
    pool = ProcessPoolExecutor(workers, initializer=fitstiles.adopt, initargs=(checked,)) if workers > 1 else None
    try:
        results = (pool.map(cut_brick, bricks, [str(out_dir)] * len(bricks), [s] * len(bricks)) if pool
                   else (cut_brick(b, str(out_dir), s) for b in bricks))
        with Settler() as settler:  # each brick's file on disk and out of memory while the next is cut
            for k, rec in enumerate(results, 1):
                _enforce(rec, s)
                records.append(rec)
                left = (time.time() - t0) / k * (len(bricks) - k)
                if rec["status"] == "ok":
                    settler.add(out_dir / f"{rec['brick']}.h5")
                    kept = int(rec["cuts"]["kept"].sum())
                    log.info("[%d/%d] brick %s: %d cutouts in %.1f s, peak RSS %.0f MB; about %.0f s left", k,
                             len(bricks), rec["brick"], kept, rec["seconds"], rec["peak_rss_mb"], left)
                else:
                    log.warning("[%d/%d] brick %s %s, skipped: %s", k, len(bricks), rec["brick"], rec["status"],
                                rec["reason"])
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    cuts = pd.concat([r["cuts"] for r in records if r["status"] == "ok"] or [pd.DataFrame()], ignore_index=True)
    failures = pd.DataFrame([{c: r[c] for c in FAILURE_COLUMNS} for r in records if r["status"] != "ok"],
                            columns=FAILURE_COLUMNS)
    write_tables(out_dir, cuts, failures)
    log.info("batch done: %d bricks cut, %d missing, %d failed, %d cutouts in %.0f s", len(records) - len(failures),
             int((failures["status"] == "missing").sum()), int((failures["status"] == "failed").sum()),
             int(cuts["kept"].sum()) if len(cuts) else 0, time.time() - t0)
    return cuts, failures


def write_tables(out_dir, cuts: pd.DataFrame, failures: pd.DataFrame) -> None:
    for name, df in (("cuts.csv", cuts), ("failures.csv", failures)):
        with atomic_path(Path(out_dir) / name) as tmp:
            df.to_csv(tmp, index=False)


def read_tables(batch_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    batch_dir = Path(batch_dir)
    try:
        cuts = pd.read_csv(batch_dir / "cuts.csv", dtype={"brick": str, "rs": str})
    except pd.errors.EmptyDataError:  # a batch in which no brick was cut
        cuts = pd.DataFrame()
    return cuts, pd.read_csv(batch_dir / "failures.csv", dtype=str)


def rebuild_brick(brick: str, batch_dir, s: CutoutSettings) -> dict:
    """Cut one brick again into its batch directory, and replace its rows in the batch's tables."""
    batch_dir = Path(batch_dir)
    if not (batch_dir / "failures.csv").exists():
        raise FileNotFoundError(f"{batch_dir}: not a finished cutout batch (no failures.csv); run the batch first")
    rec = cut_brick(brick, str(batch_dir), s)
    _enforce(rec, s)
    if rec["status"] == "ok":
        settle(batch_dir / f"{brick}.h5")  # as a batch leaves it
    cuts, failures = read_tables(batch_dir)
    cuts = cuts[cuts["brick"] != brick] if len(cuts) else cuts
    failures = failures[failures["brick"] != brick]
    if rec["status"] == "ok":
        cuts = pd.concat([cuts, rec["cuts"]], ignore_index=True)
    else:
        (batch_dir / f"{brick}.h5").unlink(missing_ok=True)
        failures = pd.concat([failures, pd.DataFrame([{c: rec[c] for c in FAILURE_COLUMNS}])], ignore_index=True)
    write_tables(batch_dir, cuts, failures)
    # Snakemake dates a directory output by this file: touching it makes the next run rebuild what follows
    stamp = batch_dir / ".snakemake_timestamp"
    if stamp.exists():
        os.utime(stamp)
    return rec


def brick_files(batch_dirs) -> list[Path]:
    """The per-brick HDF5 files of the batch directories, in a stable order."""
    return sorted((p for d in batch_dirs for p in Path(d).glob("*.h5")), key=lambda p: p.name)


def summarise(batch_dirs) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per brick and catalogue cut table, failures, cut flow summed over bricks by label and injection seed)."""
    tables = [read_tables(d) for d in batch_dirs]
    cuts = pd.concat([c for c, _ in tables if len(c)] or [pd.DataFrame()], ignore_index=True)
    failures = pd.concat([f for _, f in tables], ignore_index=True) if tables else pd.DataFrame(
        columns=FAILURE_COLUMNS)
    if len(cuts):
        cuts["rs"] = cuts["rs"].fillna("")
        numeric = flow_order([c for c in cuts.columns if c not in ("brick", "region", "rs", "label")])
        flow = cuts.groupby(["label", "rs"])[numeric].sum().reset_index()
        flow.insert(0, "class", flow["label"].map({0: "real", 1: "fake"}))
        flow.insert(3, "bricks", cuts.groupby(["label", "rs"]).size().to_numpy())
    else:
        flow = pd.DataFrame()
    return cuts, failures, flow


def flow_order(columns) -> list:
    """The cut flow's columns in the order the sources meet them: in, not injected, not detected, the selection's
    cuts (in their order), off the edge, without data, kept; then the per-run records."""
    first = [c for c in ("n_in", "cut_not_injected", "cut_not_detected") if c in columns]
    last = [c for c in ("offedge", "cut_nodata", "kept") if c in columns]
    runs = [c for c in columns if c.startswith("runs_")]
    return first + [c for c in columns if c not in first + last + runs] + last + runs


def one_class_bricks(cuts: pd.DataFrame) -> pd.DataFrame:
    """The bricks whose cutouts are all of one class (brick, real, fake kept): with ``shards.balance: brick`` they
    enter neither training nor testing, since nothing in them can be compared within the brick."""
    if not len(cuts):
        return pd.DataFrame(columns=["brick", "real", "fake"])
    kept = cuts.groupby(["brick", "label"])["kept"].sum().unstack(fill_value=0).reindex(columns=[0, 1], fill_value=0)
    kept.columns = ["real", "fake"]
    return kept[kept.min(axis=1) == 0].reset_index().astype({"real": int, "fake": int})


def format_summary(flow: pd.DataFrame, failures: pd.DataFrame, n_bricks: int, cuts: pd.DataFrame | None = None) -> str:
    """The cut flow, the bricks of one class and the failures as text tables for the log and summary.txt."""
    lines = [f"bricks selected: {n_bricks}; cut: {n_bricks - len(failures)}; "
             f"missing: {int((failures['status'] == 'missing').sum())}; "
             f"failed: {int((failures['status'] == 'failed').sum())}", ""]
    if len(flow):
        t = flow.drop(columns=["label"]).set_index(["class", "rs"]).T
        t.columns = [f"{c} {rs}".strip() for c, rs in t.columns]
        lines += ["sources in, removed by each cut in order, and kept:", t.fillna(0).astype(int).to_string(), ""]
    fallback = ([] if cuts is None or "reals_fallback" not in cuts else
                sorted(cuts.loc[cuts["reals_fallback"].fillna(0) > 0, "brick"].astype(str).unique()))
    if fallback:
        lines += [f"bricks whose real galaxies were cut from the release's coadds (no injection run kept its own; the "
                  f"rerun's processing can differ between the classes there): {', '.join(fallback)}", ""]
    lone = one_class_bricks(cuts) if cuts is not None else []
    if len(lone):
        lines += ["bricks with cutouts of one class only (no within-brick comparison: left out by shards.balance: "
                  "brick):", lone.to_string(index=False), ""]
    if len(failures):
        lines += ["bricks not cut:", failures.to_string(index=False)]
    return "\n".join(lines) + "\n"
