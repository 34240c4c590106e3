"""Rule scatter_shards: one cutout batch's kept examples, grouped by scatter bucket."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.atomic import atomic_path  # noqa: E402
from realfake.cutouts.batches import brick_files  # noqa: E402
from realfake.shards.plan import ShardPlan  # noqa: E402
from realfake.shards.build import scatter  # noqa: E402

plan = ShardPlan.read(snakemake.input.plan)
with atomic_path(snakemake.output[0], directory=True) as tmp:
    scatter(plan, brick_files([snakemake.input.cutouts]), tmp)
