"""Rule build_shards: global shuffle, train/test split, .npy shards, manifest and statistics."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.atomic import atomic_path  # noqa: E402
from realfake.batches import brick_files  # noqa: E402
from realfake.shards import ShardConfig, build  # noqa: E402

cfg = ShardConfig.from_config({**snakemake.params.shards, "folds": snakemake.params.folds})
with atomic_path(snakemake.output[0], directory=True) as tmp:
    build(brick_files(snakemake.input), tmp, snakemake.params.channels, cfg)
