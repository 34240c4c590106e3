"""Rule fold_shards: one fold's shard set (links to the shards built, no pixel copied), its manifest and summary."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import logging  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.folds import write_view  # noqa: E402

fold = int(snakemake.wildcards.fold)
with atomic_path(snakemake.output[0], directory=True) as tmp:
    s = write_view(snakemake.input[0], snakemake.output[0], tmp, fold)
logging.getLogger("realfake").info("fold %d: %s", fold, {r: v for r, v in s["splits"].items()})
