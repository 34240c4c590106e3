"""Rule gather_shards: the shards that start in one range of scatter buckets, sorted in key order."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.atomic import atomic_path  # noqa: E402
from realfake.shards.plan import ShardPlan  # noqa: E402
from realfake.shards.build import gather  # noqa: E402

plan = ShardPlan.read(snakemake.input.plan)
with atomic_path(snakemake.output[0], directory=True) as tmp:
    gather(plan, snakemake.input.scatter, int(snakemake.wildcards.part), snakemake.params.parts, tmp)
