"""Rule plot_evaluation: metrics against magnitude, colour, size and depth; per fold and brick; calibration;
training curves; image statistics."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.diagnostics import compare, statistics_figure  # noqa: E402
from realfake.evaluation.plots import binned_figure, calibration_figure, folds_figure, training_figure  # noqa: E402

pred = pd.read_csv(snakemake.input.predictions, dtype={"brick": str, "rs": str})
metrics = json.loads(Path(snakemake.input.metrics).read_text())
histories = {int(Path(h).parent.name): h for h in snakemake.input.histories}
stats, summary, profiles = compare(pred, snakemake.input.shards, snakemake.params.channels)

binned_figure(metrics, snakemake.output.binned)
calibration_figure(pred, snakemake.output.calibration)
training_figure(histories, snakemake.output.training, metrics.get("training"))
folds_figure(metrics, snakemake.output.folds)
statistics_figure(stats, summary, profiles, snakemake.output.statistics, tested=metrics.get("image_statistics"))
with atomic_path(snakemake.output.statistics_json) as tmp:
    tmp.write_text(json.dumps(summary, indent=1))
