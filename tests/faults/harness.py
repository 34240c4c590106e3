"""Helpers of the fault suite: run Snakemake in a scratch directory, find and kill a rule's script process,
and compare a stage's outputs with those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TRACEBACK = "Traceback (most recent call last)"
# A rule's `script:` runs as `python .snakemake/scripts/tmpXXXX.<rule>.py`
SCRIPT_RE = re.compile(r"\.snakemake/scripts/tmp[^/]*\.(\w+)\.py$")
WINDOWS = "faults-windows.json"  # in the reference run: when each rule's script ran


def scenario_config() -> dict:
    """The tests' tiny scenario (2 bricks of 400 px), trained for 3 epochs so that a kill can land after an
    epoch's checkpoint and the rerun must resume from it."""
    cfg = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    cfg["train"]["epochs"] = 3
    return cfg


def write_config(run: Path, cfg: dict) -> Path:
    (run / "config").mkdir(parents=True, exist_ok=True)
    path = run / "config" / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def env() -> dict:
    # PDFs carry their creation date unless SOURCE_DATE_EPOCH fixes it: with it, every output can be compared byte
    # for byte with the uninterrupted run's
    return dict(os.environ, SOURCE_DATE_EPOCH="0")


def command(run: Path, *args) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(SNAKEFILE), "--directory", str(run), *map(str, args)]


@dataclass
class Result:
    rc: int
    out: str  # stdout and stderr together: what a user sees on the terminal
    seconds: float
    args: tuple = ()

    def explain(self, n: int = 4000) -> str:
        return f"snakemake {' '.join(self.args)} -> rc {self.rc}\n{self.out[-n:]}"


def snakemake(run: Path, *args, timeout: float = 600) -> Result:
    t0 = time.perf_counter()
    p = subprocess.run(command(run, *args), cwd=run, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, time.perf_counter() - t0, tuple(map(str, args)))


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def script_rule(proc: psutil.Process) -> str | None:
    """The rule whose script ``proc`` runs, or None."""
    try:
        for arg in proc.cmdline()[1:3]:
            m = SCRIPT_RE.search(arg)
            if m:
                return m.group(1)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
    return None


def script_processes(pid: int, rules) -> list[psutil.Process]:
    return [p for p in descendants(pid) if script_rule(p) in rules]


class Watch:
    """Records when each rule's script process was first and last seen under a running Snakemake."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every, self.seen = pid, every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            now = time.perf_counter()
            for p in descendants(self.pid):
                rule = script_rule(p)
                if rule:
                    first, _ = self.seen.get(rule, (now, now))
                    self.seen[rule] = (first, now)
            time.sleep(self.every)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.seen


def run_watched(run: Path, *args, timeout: float = 900) -> tuple[Result, dict]:
    """Snakemake to completion; also how long each rule's script ran (seconds)."""
    t0 = time.perf_counter()
    with open(run / "snakemake.out", "w") as out:
        p = subprocess.Popen(command(run, *args), cwd=run, env=env(), stdout=out, stderr=subprocess.STDOUT)
        w = Watch(p.pid)
        p.wait(timeout=timeout)
    seen = w.stop()
    res = Result(p.returncode, (run / "snakemake.out").read_text(), time.perf_counter() - t0, args)
    return res, {rule: (first - t0, last - t0) for rule, (first, last) in seen.items()}


@dataclass
class Kill:
    mode: str  # "script": the rule's script process alone; "group": Snakemake and everything under it
    at: float  # seconds after the stage's first script process appeared
    landed: bool  # a process of the stage was alive and was killed
    rule: str | None  # the rule whose script was running when killed
    result: Result | None = None  # Snakemake's own exit, for a script kill
    orphans: int = 0  # the killed script's children (pool workers) still alive after Snakemake ended


def run_and_kill(run: Path, args, rules, mode: str, delay: float, after_kill=None, ready=None,
                 timeout: float = 300) -> Kill:
    """Start Snakemake; ``delay`` s after the first script of ``rules`` starts (and ``ready()`` is true, when
    given), SIGKILL as ``mode`` says.

    ``after_kill()`` is called the moment the kill is done, before Snakemake (if alive) reacts.
    """
    assert mode in ("script", "group")
    t_start = time.perf_counter()
    out = open(run / "snakemake.out", "w")
    p = subprocess.Popen(command(run, *args), cwd=run, env=env(), stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        first = None
        while first is None and p.poll() is None and time.perf_counter() - t_start < timeout:
            if script_processes(p.pid, rules):
                first = time.perf_counter()
            else:
                time.sleep(0.005)
        if first is None:
            raise RuntimeError(f"no script of {rules} ever ran: {(run / 'snakemake.out').read_text()[-3000:]}")
        while ready is not None and p.poll() is None and not ready():
            time.sleep(0.005)
        first = time.perf_counter() if ready is not None else first
        while p.poll() is None and time.perf_counter() < first + delay:
            time.sleep(0.005)
        at = time.perf_counter() - first
        if mode == "group":
            # a node failure: Snakemake, its jobs and their workers all die at once
            procs = descendants(p.pid)
            running = [script_rule(q) for q in procs if script_rule(q) in rules]
            landed = p.poll() is None
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for q in procs:
                try:
                    q.kill()
                except psutil.NoSuchProcess:
                    pass
            p.wait(timeout=60)
            if after_kill:
                after_kill()
            return Kill(mode, at, landed, running[0] if running else None)
        # the rule's script process alone (the OOM killer, a crash): wait for the next one if between two jobs
        victims = []
        while not victims and p.poll() is None:
            victims = script_processes(p.pid, rules)
            if not victims:
                time.sleep(0.005)
        children, names = [], [script_rule(v) for v in victims]
        for v in victims:
            try:
                children += v.children(recursive=True)
                v.kill()
            except psutil.NoSuchProcess:
                pass
        if after_kill:
            after_kill()
        p.wait(timeout=timeout)
        orphans = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        for c in orphans:  # left alone they might write on: a real orphan would be killed by the scheduler too
            c.kill()
        out.flush()
        res = Result(p.returncode, (run / "snakemake.out").read_text(), time.perf_counter() - t_start, tuple(args))
        return Kill(mode, at, bool(victims), next((n for n in names if n), None), res, len(orphans))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        out.close()


def rerun(run: Path, *args) -> tuple[Result, list[str]]:
    """Rerun as a user would: plainly first, then with what Snakemake asks for (--unlock, --rerun-incomplete).

    Returns the last result and the flags that were asked for. Every refusal must name its remedy.
    """
    asked, extra = [], []
    for _ in range(4):
        res = snakemake(run, *args, *extra)
        if res.rc == 0:
            return res, asked
        if "--unlock" in res.out and "--unlock" not in asked and "cannot be locked" in res.out.lower():
            asked.append("--unlock")
            unlock = snakemake(run, "--unlock")
            if unlock.rc != 0:
                return unlock, asked
            continue
        if "--rerun-incomplete" in res.out and "--rerun-incomplete" not in extra:
            asked.append("--rerun-incomplete")
            extra.append("--rerun-incomplete")
            continue
        return res, asked
    return res, asked


# --------------------------------------------------------------------------- outputs


def files_under(run: Path, roots) -> dict[str, Path]:
    """Every file under the stage's output roots, by path relative to the run (hidden names included)."""
    out = {}
    for r in roots:
        p = run / r
        if p.is_file():
            out[r] = p
        elif p.is_dir():
            for f in p.rglob("*"):
                if f.is_file():
                    out[str(f.relative_to(run))] = f
    return out


def is_temporary(rel: str) -> bool:
    """A writer's hidden temporary (``.name.XXXX.tmp/``), never a final name."""
    return any(part.startswith(".") and part.endswith(".tmp") for part in Path(rel).parts)


IGNORED = {".snakemake_timestamp"}


def finals(run: Path, roots) -> dict[str, Path]:
    return {k: v for k, v in files_under(run, roots).items() if not is_temporary(k) and Path(k).name not in IGNORED}


def _h5_equal(a: Path, b: Path) -> str | None:
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in fa:
            if name not in fb:
                return f"dataset {name} missing"
            x, y = fa[name][()], fb[name][()]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return f"dataset {name} differs"
    return None


def keras_weights(path: Path) -> dict:
    """The weights inside a .keras file (a zip holding model.weights.h5), by HDF5 path; and its config."""
    import io

    import h5py

    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        if bad:
            raise ValueError(f"{path}: member {bad} is corrupt")
        # Keras stores id() of shared dtype policies: a memory address, different in every process
        config = json.loads(z.read("config.json"), object_hook=lambda d: {k: v for k, v in d.items()
                                                                            if k != "shared_object_id"})
        weights = {}
        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
            f.visititems(lambda name, obj: weights.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {"config": config, "weights": weights}


def _keras_equal(a: Path, b: Path) -> str | None:
    wa, wb = keras_weights(a), keras_weights(b)
    if wa["config"] != wb["config"]:
        return "model config differs"
    if wa["weights"].keys() != wb["weights"].keys():
        return "weight tensors differ in name"
    diff = [k for k in wa["weights"] if not np.array_equal(wa["weights"][k], wb["weights"][k])]
    if diff:
        worst = max(float(np.max(np.abs(wa["weights"][k] - wb["weights"][k]))) for k in diff)
        return f"{len(diff)} of {len(wa['weights'])} weight tensors differ (max |diff| {worst:.3g})"
    return None


def same(reference: Path, path: Path) -> str | None:
    """None if ``path`` is complete, readable and equal to ``reference``; else what is wrong.

    HDF5: every dataset (cutouts, labels, sources, ...) equal; .keras: architecture and every weight tensor equal;
    .gz: the bytes it holds; anything else byte for byte.
    """
    try:
        if path.suffix == ".h5":
            return _h5_equal(reference, path)
        if path.suffix == ".keras":
            return _keras_equal(reference, path)
        if path.suffix == ".gz":  # gzip's header holds the time of writing: compare what it holds
            import gzip

            return None if gzip.decompress(reference.read_bytes()) == gzip.decompress(path.read_bytes()) else "differs"
        return None if reference.read_bytes() == path.read_bytes() else "bytes differ"
    except FileNotFoundError:
        return None  # removed meanwhile (Snakemake cleaning up after a failed job): nothing partial to see
    except Exception as err:  # unreadable: truncated HDF5 or zip
        if not path.exists():
            return None
        return f"unreadable: {type(err).__name__}: {err}"


@dataclass
class Check:
    """Outputs compared with the reference: how many, which were lost or corrupted, what litter was left."""

    checked: int = 0
    lost: list = field(default_factory=list)
    corrupted: list = field(default_factory=list)
    litter: list = field(default_factory=list)

    def add(self, other: "Check") -> "Check":
        self.checked += other.checked
        self.lost += other.lost
        self.corrupted += other.corrupted
        self.litter += other.litter
        return self


def check_present(ref: Path, run: Path, roots) -> Check:
    """Right after a kill: every file under a final name must be complete and equal to the reference's."""
    c = Check()
    want = finals(ref, roots)
    for rel, path in finals(run, roots).items():
        c.checked += 1
        if rel not in want:
            c.corrupted.append(f"{rel}: not in the uninterrupted run")
            continue
        why = same(want[rel], path)
        if why:
            c.corrupted.append(f"{rel}: {why}")
    return c


def check_complete(ref: Path, run: Path, roots) -> Check:
    """After the rerun: every output of the uninterrupted run is there and equal; nothing else under a final name."""
    c = Check()
    have = finals(run, roots)
    for rel, path in finals(ref, roots).items():
        c.checked += 1
        if rel not in have:
            c.lost.append(rel)
            continue
        why = same(path, have[rel])
        if why:
            c.corrupted.append(f"{rel}: {why}")
    c.corrupted += [f"{rel}: not in the uninterrupted run" for rel in set(have) - set(finals(ref, roots))]
    c.litter = sorted(k for k in files_under(run, roots) if is_temporary(k))
    for r in roots:  # a whole output directory's temporary lies beside it
        c.litter += sorted(str(p.relative_to(run)) for p in (run / r).parent.glob(f".{Path(r).name}.*.tmp"))
    return c


def copy_run(ref: Path, dest: Path, without=()) -> Path:
    """A copy of the reference run (config, release, results, Snakemake's metadata), times kept."""
    shutil.copytree(ref, dest, symlinks=True, ignore=shutil.ignore_patterns("snakemake.out", WINDOWS))
    for rel in without:
        p = dest / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return dest
