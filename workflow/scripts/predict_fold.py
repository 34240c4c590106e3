"""Rule predict_fold: the fold model's P(fake) for the fold's test examples (the bricks it never saw)."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.folds import predict_fold  # noqa: E402
from realfake.training.runtime import configure_threads  # noqa: E402

configure_threads(snakemake.threads)
pred = predict_fold(snakemake.input.model, snakemake.input.shards)
with atomic_path(snakemake.output[0]) as tmp:
    pred.to_csv(tmp, index=False)
