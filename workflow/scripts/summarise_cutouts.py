"""Rule summarise_cutouts: the cut flow over all bricks, and the bricks that were not cut."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import logging  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.cutouts.batches import format_summary, summarise  # noqa: E402

cuts, failures, flow = summarise(snakemake.input)
out = snakemake.output
for path, table in ((out.bricks, cuts), (out.cutflow, flow), (out.failures, failures)):
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
text = format_summary(flow, failures, snakemake.params.n_bricks, cuts)
logging.getLogger("realfake").info("\n%s", text)
if not len(cuts):  # nothing to train on: say why here, not as an empty shard set three rules later
    reasons = failures["reason"].value_counts().head(3)
    raise SystemExit(f"no brick of the {snakemake.params.n_bricks} selected was cut; the commonest reasons:\n"
                     + "\n".join(f"  {n} bricks: {why}" for why, n in reasons.items())
                     + "\n(release.root, release.region and release.bricks decide where bricks are looked for)")
with atomic_path(out.summary) as tmp:
    tmp.write_text(text)
