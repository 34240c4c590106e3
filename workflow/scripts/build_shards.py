"""Rule build_shards: the gather jobs' shards in one directory (hard links), the manifest and the summary."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.atomic import atomic_path  # noqa: E402
from realfake.shards.plan import ShardPlan  # noqa: E402
from realfake.shards.build import assemble  # noqa: E402

plan = ShardPlan.read(snakemake.input.plan)
with atomic_path(snakemake.output[0], directory=True) as tmp:
    assemble(plan, snakemake.input.parts, tmp)
