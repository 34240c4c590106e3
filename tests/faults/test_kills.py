"""Kill each stage with SIGKILL at seeded random points, rerun, and compare with the uninterrupted run.

Two ways: the rule's script process alone (the OOM killer, a crash: Snakemake sees the job fail) and the whole
Snakemake process group (a node failure: Snakemake itself dies, leaving its lock and incomplete markers). Right
after each kill, every output under a final name must be complete and equal to the uninterrupted run's; after the
rerun, every output must be there and equal: cutouts dataset by dataset, shards byte for byte, model weights
tensor by tensor (deterministic ops), metrics, predictions and figures byte for byte.
"""

from __future__ import annotations

import random
import shutil

import pytest

from faults.harness import TRACEBACK, Check, check_complete, check_present, copy_run, rerun, run_and_kill

pytestmark = pytest.mark.faults

# stage: (rules whose script is killed, Snakemake target, outputs compared, what is removed from the uninterrupted
# run's copy so that the stage runs as for the first time, downstream included)
PLOTS = [f"results/evaluation/{n}.{e}" for n in ("binned", "calibration", "training", "folds", "statistics",
                                                  "mosaic", "mosaic_extremes") for e in ("png", "pdf")]
# the scenario's two folds (2 bricks): each fold's model and its training log
MODELS = [f"results/folds/{k}/{f}" for k in (0, 1)
          for f in ("model/model.keras", "history.csv", "training/history.csv")]
STAGES = {
    "mock_release": (["mock_release"], "resources/synthetic", ["resources/synthetic"], ["resources", "results", "logs"]),
    "make_cutouts": (["make_cutouts"], "cutouts", ["results/cutouts"], ["results/cutouts", "results/shards",
                                                                        "results/folds", "results/evaluation"]),
    "build_shards": (["plan_shards", "scatter_shards", "gather_shards", "build_shards"], "shards", ["results/shards"],
                     ["results/shuffle", "results/shards", "results/folds", "results/evaluation"]),
    "train_cnn": (["train_cnn"], "train", MODELS, ["results/folds", "results/evaluation"]),
    # the same, killed after the first epoch's checkpoint: the rerun must resume from it, to the same weights
    "train_cnn_resume": (["train_cnn"], "train", MODELS, ["results/folds", "results/evaluation"]),
    "evaluate_cnn": (["evaluate_cnn"], "evaluate", ["results/evaluation"], ["results/evaluation"]),
    "plots": (["plot_evaluation", "plot_mosaic"], "evaluate", ["results/evaluation"],
              PLOTS + ["results/evaluation/image_statistics.json"]),
}
# (stage, kill mode) in order; the k-th case of a stage draws its point from the seed "<stage>/<k>"
PLAN = [("mock_release", "script"), ("mock_release", "group"),
        ("make_cutouts", "script"), ("make_cutouts", "group"), ("make_cutouts", "script"),
        ("build_shards", "group"), ("build_shards", "script"), ("build_shards", "group"),
        ("train_cnn", "script"), ("train_cnn", "group"), ("train_cnn_resume", "group"),
        ("evaluate_cnn", "group"), ("plots", "script")]
CASES = [(stage, sum(s == stage for s, _ in PLAN[:i]), mode) for i, (stage, mode) in enumerate(PLAN)]
# Known, not hidden: the comparison stays exact, the case is expected to fail until resuming is exact; strict, so
# that it fails the suite as soon as it passes (then remove the mark)
CHECKPOINT = "results/folds/0/training/checkpoints/state.json"
# stage: (file whose appearance starts the clock, window after it in s: about two epochs of the scenario)
AFTER = {"train_cnn_resume": (CHECKPOINT, 1.0)}
# history.csv grows one line per epoch (Keras' CSVLogger): after a kill it is a partial log, not an output
GROWING = {f"results/folds/{k}/training/history.csv" for k in (0, 1)}


def point(stage: str, k: int) -> float:
    """The seeded random point of the k-th kill of a stage: a fraction of the stage's running time."""
    return random.Random(f"realfake-faults/{stage}/{k}").uniform(0.05, 0.95)


@pytest.mark.parametrize("stage, k, mode", [
    pytest.param(s, k, m, id=f"{s}-{k}-{m}")
    for s, k, m in CASES])
def test_kill(reference, record, tmp_path, stage, k, mode):
    rules, target, roots, removed = STAGES[stage]
    ref = reference.run
    run = tmp_path / "run"
    args = [target, "--cores", "2"]
    marker, window = AFTER.get(stage, (None, reference.window(rules)))
    u = point(stage, k)
    at_kill, state = Check(), {}

    def look():
        at_kill.add(check_present(ref, run, [r for r in roots if r not in GROWING]))
        if (run / CHECKPOINT).exists():
            ckpt = __import__("json").loads((run / CHECKPOINT).read_text())
            state["epoch"] = ckpt["epoch"] + 1  # the epoch in progress, counted from 1

    kill, tries, delay = None, 0, u * window
    while tries < 3:
        shutil.rmtree(run, ignore_errors=True)
        copy_run(ref, run, without=removed)
        state.clear()
        kill = run_and_kill(run, args, rules, mode, delay, after_kill=look,
                            ready=(lambda: (run / marker).exists()) if marker else None)
        tries += 1
        if kill.landed and (not marker or state.get("epoch")):
            break
        delay /= 2  # the stage ran faster than in the reference: aim earlier
    record(at_kill)
    record(note=f"{mode} kill at {kill.at:.2f} s of ~{window:.1f} s (u={u:.2f}) in {kill.rule or '-'}"
           + (f" after {tries - 1} misses" if tries > 1 else ""))
    assert kill.landed, "every kill landed after the stage's processes had ended"
    assert not at_kill.corrupted, f"right after the kill, outputs under final names were partial: {at_kill.corrupted}"
    if mode == "script":
        # Snakemake saw its job die: it must say which rule failed and where its log is, without a traceback
        res = kill.result
        assert res.rc != 0, res.explain()
        assert f"Error in rule {kill.rule}" in res.out and "log:" in res.out, res.explain()
        assert TRACEBACK not in res.out, res.explain()
        if kill.orphans:
            record(note=f"{kill.orphans} worker(s) of the killed script outlived it")
    res, asked = rerun(run, *args)
    if asked:
        record(note="rerun asked for " + " and ".join(asked))
    assert res.rc == 0, res.explain()
    if state.get("epoch"):
        resumed = "resuming from the checkpoint in" in (run / "logs" / "train_cnn" / "0.log").read_text()
        record(note=f"killed with the epoch-{state['epoch']} checkpoint on disk; rerun "
               + ("resumed from it" if resumed else "did NOT resume"))
        assert resumed, "the rerun did not resume from the checkpoint"
    if marker:
        assert state.get("epoch"), "the kill did not land after a checkpoint"
    after = check_complete(ref, run, roots)
    record(after)
    assert not after.lost and not after.corrupted, f"lost {after.lost}, corrupted {after.corrupted}"
    assert not after.litter, f"the rerun left temporaries behind: {after.litter}"
    shutil.rmtree(tmp_path, ignore_errors=True)
