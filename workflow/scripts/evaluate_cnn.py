"""Rule evaluate_cnn: predictions on the test split, metrics with intervals, the verdict, ROC and attribution figures."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.diagnostics import attribution_figure, integrated_gradients  # noqa: E402
from realfake.evaluate import evaluate, predict  # noqa: E402
from realfake.model import load_model  # noqa: E402
from realfake.plots import extremes, load_cutouts, roc_figure  # noqa: E402
from realfake.train import configure_threads  # noqa: E402

configure_threads(snakemake.threads)
e = snakemake.params.evaluate
channels = list(snakemake.params.channels)
shards = Path(snakemake.input.shards)
model = load_model(snakemake.input.model)
pred = predict(model, shards, shards / "manifest.csv")
metrics = evaluate(pred, e["bootstrap"], e["seed"], e["bins"])
logging.getLogger("realfake").info(metrics["verdict"])

rows = extremes(pred, e["attribution_examples"])
cutouts = load_cutouts(pred, [r.name for r, _, _ in rows], shards)
keys = list(cutouts)
ig = integrated_gradients(model, [cutouts[k] for k in keys], channels)

with atomic_path(snakemake.output.predictions) as tmp:
    pred.to_csv(tmp, index=False)
roc_figure(pred, metrics, snakemake.output.roc)
attribution_figure(rows, cutouts, dict(zip(keys, ig)), channels, snakemake.output.attribution)
with atomic_path(snakemake.output.metrics) as tmp:
    tmp.write_text(json.dumps(metrics, indent=1))
