"""Rule evaluate_cnn: predictions on the test split, metrics with intervals, the verdict, the ROC figure."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluate import evaluate, predict  # noqa: E402
from realfake.plots import roc_figure  # noqa: E402
from realfake.train import configure_threads  # noqa: E402

configure_threads(snakemake.threads)
e = snakemake.params.evaluate
shards = Path(snakemake.input.shards)
pred = predict(snakemake.input.model, shards, shards / "manifest.csv")
metrics = evaluate(pred, e["bootstrap"], e["seed"], e["mag_g_bins"])
logging.getLogger("realfake").info(metrics["verdict"])
with atomic_path(snakemake.output.predictions) as tmp:
    pred.to_csv(tmp, index=False)
with atomic_path(snakemake.output.roc) as tmp:
    roc_figure(pred, metrics, tmp)
with atomic_path(snakemake.output.metrics) as tmp:
    tmp.write_text(json.dumps(metrics, indent=1))
