"""Rule evaluate_cnn: the folds' predictions pooled; metrics, training gate, power and verdict; ROC and attribution."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.diagnostics import attribution_figure, compare, integrated_gradients, tested_within  # noqa: E402
from realfake.evaluation.evaluate import evaluate, with_replicates  # noqa: E402
from realfake.training.model import load_model  # noqa: E402
from realfake.evaluation.plots import extremes, load_cutouts, roc_figure  # noqa: E402
from realfake.training.runtime import configure_threads  # noqa: E402

configure_threads(snakemake.threads)
e = snakemake.params.evaluate
channels = list(snakemake.params.channels)
shards = Path(snakemake.input.shards)
keys = ["brick", "rs", "id", "label"]
read = dict(dtype={"brick": str, "rs": str}, keep_default_na=False, na_values=[""])
pred = pd.concat([pd.read_csv(p, **read) for p in snakemake.input.predictions], ignore_index=True)
# replicate trainings (evaluate.replicates): each example scored by the mean of its replicates' networks
replicates = getattr(snakemake.input, "replicates", [])
if replicates:
    by_replicate = {}
    for p in replicates:  # results/replicates/<r>/folds/<fold>/predictions.csv
        by_replicate.setdefault(int(Path(p).parents[2].name), []).append(pd.read_csv(p, **read))
    pred = with_replicates(pred, {r: pd.concat(f, ignore_index=True) for r, f in by_replicate.items()}, keys)
base = pd.read_csv(snakemake.input.baseline, **read)
pred = pred.merge(base[keys + ["p_fake"]].rename(columns={"p_fake": "p_fake_baseline"}), on=keys, how="left")
histories = {int(Path(h).parent.name): pd.read_csv(h, na_values=["NA"]) for h in snakemake.input.histories}
baseline = pred["p_fake_baseline"] if pred["p_fake_baseline"].notna().all() else None
if baseline is None:
    logging.getLogger("realfake").warning("the baseline scored only some test examples: left out of the verdict")
# the sensitivity grid of this run (sensitivity.enabled): quoted in the verdict
grid = json.loads(Path(snakemake.input.sensitivity[0]).read_text()) if snakemake.input.sensitivity else None
# the processing check, the population answer and the capacity check (the sensitivity grid's scenarios have none)
checks = {k: json.loads(Path(getattr(snakemake.input, k)).read_text()) for k in ("processing", "population", "capacity")
          if hasattr(snakemake.input, k)}
# the image statistics, tested within pairs (or bricks): what differs, in the verdict
stats, _, _ = compare(pred, shards, channels)
# (with the statistics classifier, tested by refitting it under permutations: at least 1000 of them)
checks["image_statistics"] = tested_within(stats, pred, e["alpha"], seed=e["seed"],
                                           classifier_permutations=max(e["permutations"], 1000))
metrics = evaluate(pred, e, histories, snakemake.params.epochs, baseline, snakemake.params.folds,
                   snakemake.params.monitor, grid, **checks)
logging.getLogger("realfake").info(metrics["verdict"])

# attribution: each example explained by the model that scored it
rows = extremes(pred, e["attribution_examples"])
cutouts = load_cutouts(pred, [r.name for r, _, _ in rows], shards)
ig = {}
models = {int(Path(m).parents[1].name): m for m in snakemake.input.models}
for fold in sorted({int(pred.loc[i, "fold"]) for i in cutouts}):
    names = [i for i in cutouts if int(pred.loc[i, "fold"]) == fold]
    ig.update(zip(names, integrated_gradients(load_model(models[fold]), [cutouts[i] for i in names], channels)))

with atomic_path(snakemake.output.predictions) as tmp:
    pred.to_csv(tmp, index=False)
roc_figure(pred, metrics, snakemake.output.roc)
attribution_figure(rows, cutouts, ig, channels, snakemake.output.attribution)
with atomic_path(snakemake.output.metrics) as tmp:
    tmp.write_text(json.dumps(metrics, indent=1, default=float))
