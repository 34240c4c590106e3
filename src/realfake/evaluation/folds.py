"""Cross-fitting by brick: each fold's shard set, as the training and evaluation code read it.

``build_shards`` writes every example once, in K folds of whole bricks
(``xfold<k>_N.npy``). The model of fold k trains on the other folds and
predicts fold k, so every brick with examples is tested exactly once, by a
model that never saw it. Its shard set is a directory of relative symbolic
links under the usual names, with no pixel copied::

    results/folds/<k>/shards/
        xtest_N.npy  -> fold k                  (predicted by this fold's model)
        xvalid_N.npy -> fold k+1 (mod K)        (early stopping, training curves; K >= 3)
        xtrain_N.npy -> the other folds
        manifest.csv, summary.json              (this view's rows; normalisation of its training split)

With shards built as train/valid/test splits (``evaluate.folds: 1``) the one
view is the splits themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from realfake.shards.writer import STATS_EXAMPLES, channel_stats
from realfake.shards.shardset import ShardSet, load_shard, read_manifest, read_summary


def roles(groups: list[str], fold: int) -> dict:
    """role (test, valid, train) -> the shard groups it reads, for ``fold``."""
    if groups[0] != "fold0":  # train/valid/test splits: one fold, the splits as they are
        if fold != 0:
            raise ValueError(f"the shards hold train/valid/test splits, not folds: there is no fold {fold}")
        return {"test": ["test"], "valid": ["valid"], "train": ["train"]}
    k = len(groups)
    if not 0 <= fold < k:
        raise ValueError(f"fold {fold} outside 0..{k - 1}")
    valid = [groups[(fold + 1) % k]] if k >= 3 else []
    return {"test": [groups[fold]], "valid": valid,
            "train": [g for g in groups if g not in (groups[fold], *valid)]}


def make_view(shard_dir, out_dir, fold: int) -> dict:
    """Write fold ``fold``'s shard set into ``out_dir`` (new or empty); return its summary. The links are relative,
    so the shards and their views can move together (:func:`write_view` writes into a temporary directory)."""
    shard_dir, out_dir = Path(shard_dir), Path(out_dir)
    return _write_view(shard_dir, out_dir, out_dir, fold)


def _write_view(shard_dir: Path, out_dir: Path, link_from: Path, fold: int) -> dict:
    parent = read_summary(shard_dir)
    groups = parent.get("groups", ["test", "valid", "train"])
    plan = roles(groups, fold)
    man = read_manifest(shard_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = {group: ShardSet.read(shard_dir, group) for group in groups}
    rows, counts = [], {}
    for role, sources in plan.items():
        n = 0
        for group in sources:
            s = sets[group]
            for shard, files in enumerate(zip(s.x, s.y, s.weights or [None] * len(s.x))):
                for src in filter(None, files):
                    link = out_dir / f"{src.name[0]}{role}_{n}.npy"
                    link.symlink_to(os.path.relpath(src, link_from))
                part = man[(man["split"] == group) & (man["shard"] == shard)].sort_values("index").copy()
                part.insert(0, "group", group)
                part.insert(1, "group_shard", shard)  # where the example lies in the shards built
                part["split"], part["shard"] = role, n
                rows.append(part)
                n += 1
        counts[role] = n
    view = pd.concat(rows, ignore_index=True) if rows else man.iloc[:0]
    view.insert(0, "fold", fold)
    view.to_csv(out_dir / "manifest.csv", index=False)
    if not counts["train"] or not counts["test"]:
        raise ValueError(f"fold {fold} of {shard_dir} has no {'training' if counts['test'] else 'test'} shards")
    first = load_shard(sets[plan["train"][0]].x[0], mmap_mode="r")
    summary = {
        "fold": fold,
        "groups": plan,
        "parent_summary_sha256": hashlib.sha256((shard_dir / "summary.json").read_bytes()).hexdigest(),
        "channels": parent["channels"],
        "example_shape": parent["example_shape"],
        "n_examples": int(len(view)),
        "bricks": {role: sorted(set(view.loc[view["split"] == role, "brick"])) for role in plan},
        "splits": {role: {"n_shards": counts[role],
                          "n_real": int(((view["split"] == role) & (view["label"] == 0)).sum()),
                          "n_fake": int(((view["split"] == role) & (view["label"] == 1)).sum())} for role in plan},
        "normalisation": channel_stats(np.asarray(first[:STATS_EXAMPLES]), parent["channels"]),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def predict_fold(model, view_dir, batch_size: int = 256) -> pd.DataFrame:
    """The test examples of a fold's view with the fold model's ``p_fake``, named by where they lie in the shards
    built (``split`` = their fold, ``shard``, ``index``), so that pooled predictions point at the pixels."""
    from realfake.evaluation.evaluate import predict

    pred = predict(model, view_dir, Path(view_dir) / "manifest.csv", batch_size)
    pred["split"], pred["shard"] = pred.pop("group"), pred.pop("group_shard")
    return pred


def write_view(shard_dir, final_dir, tmp_dir, fold: int) -> dict:
    """:func:`make_view` into ``tmp_dir``, with links that resolve once it is renamed to ``final_dir``."""
    return _write_view(Path(shard_dir), Path(tmp_dir), Path(final_dir), fold)
