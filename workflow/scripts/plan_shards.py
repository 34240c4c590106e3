"""Rule plan_shards: the census of the brick files, matching and balancing, the split of each brick, the buckets."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.cutouts.batches import brick_files  # noqa: E402
from realfake.shards.plan import ShardConfig, make_plan  # noqa: E402

cfg = ShardConfig.from_config({**snakemake.params.shards, "folds": snakemake.params.folds})
plan = make_plan(brick_files(snakemake.input), snakemake.params.channels, cfg)
plan.write(snakemake.output[0])
