"""Rule processing_check: the same real galaxies in the release's coadds and the injection run's, compared."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.cutouts.batches import brick_files  # noqa: E402
from realfake.cutouts.processing import check_bricks, processing_figure  # noqa: E402

summary, diffs = check_bricks(brick_files(snakemake.input), snakemake.params.tolerances, snakemake.params.alpha)
logging.getLogger("realfake").info("processing check: %s", " ".join(summary["reasons"]) or "no difference")
processing_figure(summary, diffs, snakemake.output.figure)
with atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(summary, indent=1, default=float))
