"""The fault suite's reference run and its table: every case tried, passed, and the outputs it lost or corrupted.

Run it with ``make faults`` (``pytest tests/faults -m faults``); ``make test`` leaves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from faults.harness import WINDOWS, Check, run_watched, scenario_config, write_config

GROUPS = {"test_kills": "kill", "test_bad_inputs": "bad input", "test_disk_full": "disk full",
          "test_safety": "safety"}
RECORDS: dict = {}  # nodeid -> {"check": Check, "notes": [...]}
OUTCOMES: dict = {}  # nodeid -> passed / failed / skipped (+ reason)
T0 = time.perf_counter()


@dataclass
class Reference:
    """The uninterrupted run of the scenario, and how long each rule's script ran in it (s from the start)."""

    run: Path
    windows: dict

    def window(self, rules) -> float:
        spans = [self.windows[r] for r in rules if r in self.windows]
        return max(e for _, e in spans) - min(s for s, _ in spans)


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    """Built once per session; REALFAKE_FAULTS_REFERENCE=DIR reuses (or first builds) one, to iterate on a case."""
    keep = os.environ.get("REALFAKE_FAULTS_REFERENCE")
    run = Path(keep) if keep else tmp_path_factory.mktemp("reference")
    times = run / WINDOWS
    if keep and times.exists():
        return Reference(run, {k: tuple(v) for k, v in json.loads(times.read_text()).items()})
    shutil.rmtree(run, ignore_errors=True)
    write_config(run, scenario_config())
    res, windows = run_watched(run, "--cores", "2")
    assert res.rc == 0, res.explain()
    times.write_text(json.dumps(windows))
    return Reference(run, windows)


@pytest.fixture
def record(request):
    """``record(check, note)``: what the case compared and found, for the final table."""
    entry = RECORDS.setdefault(request.node.nodeid, {"check": Check(), "notes": []})

    def add(check: Check | None = None, note: str | None = None):
        if check is not None:
            entry["check"].add(check)
        if note:
            entry["notes"].append(note)

    return add


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        reason, outcome = "", rep.outcome
        if hasattr(rep, "wasxfail"):
            outcome, reason = ("known failure" if rep.skipped else "passed"), rep.wasxfail
        elif rep.skipped and isinstance(rep.longrepr, tuple):
            reason = rep.longrepr[2].removeprefix("Skipped: ")
        elif rep.failed:
            reason = str(rep.longrepr.reprcrash.message if hasattr(rep.longrepr, "reprcrash") else rep.longrepr)
        OUTCOMES[item.nodeid] = (outcome, reason)
    return rep


def _name(nodeid: str) -> tuple[str, str]:
    module, _, test = nodeid.partition("::")
    return GROUPS.get(Path(module).stem, Path(module).stem), test.removeprefix("test_")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not OUTCOMES:
        return
    rows, lost_total, known_total, checked_total = [], 0, 0, 0
    for nodeid, (outcome, reason) in OUTCOMES.items():
        group, case = _name(nodeid)
        entry = RECORDS.get(nodeid, {"check": Check(), "notes": []})
        c = entry["check"]
        bad = len(c.lost) + len(c.corrupted)
        if outcome == "known failure":
            known_total += bad
        else:
            lost_total += bad
        checked_total += c.checked
        notes = "; ".join(entry["notes"] + [f"LOST {x}" for x in c.lost] + [f"CORRUPTED {x}" for x in c.corrupted]
                          + ([f"temporaries left: {len(c.litter)}"] if c.litter else []))
        if outcome != "passed" and reason:
            notes = (reason.splitlines()[0][:160] + ("; " + notes if notes else ""))
        rows.append((group, case, outcome, str(c.checked), str(bad), notes))
    tr = terminalreporter
    head = ("group", "case", "result", "outputs checked", "lost/corrupted", "notes")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    tr.section("fault suite")
    line = lambda r: " | ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + " | " + r[5]
    tr.write_line(line(head))
    tr.write_line("-+-".join("-" * w for w in widths) + "-+-" + "-" * 5)
    for r in rows:
        tr.write_line(line(r))
    n = len(rows)
    passed = sum(r[2] == "passed" for r in rows)
    skipped = sum(r[2] == "skipped" for r in rows)
    known = sum(r[2] == "known failure" for r in rows)
    tr.write_line("")
    tr.write_line(f"cases tried: {n - skipped}   passed: {passed}   failed: {n - passed - skipped - known}   "
                  f"known failures: {known}   skipped: {skipped}   outputs checked: {checked_total}")
    tr.write_line(f"outputs lost or corrupted: {lost_total}"
                  + (f" (and {known_total} in the known failures)" if known_total else "")
                  + f"   wall time: {time.perf_counter() - T0:.0f} s")
