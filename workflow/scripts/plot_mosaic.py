"""Rule plot_mosaic: real/fake test pairs matched in g magnitude at several brightness percentiles."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.plots import load_cutouts, matched_pairs, mosaic  # noqa: E402

pred = pd.read_csv(snakemake.input.predictions, dtype={"brick": str, "rs": str})
pairs = matched_pairs(pred, snakemake.params.evaluate["mosaic_percentiles"])
rows = [r.name for pair in pairs for r in pair[:2]]
cutouts = load_cutouts(pred, rows, snakemake.input.shards)
with atomic_path(snakemake.output[0]) as tmp:
    mosaic(pairs, cutouts, list(snakemake.params.channels), tmp,
           title="Test-split real (R) and fake (F) galaxies matched in g magnitude; p = network's P(fake)")
