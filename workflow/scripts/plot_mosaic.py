"""Rule plot_mosaic: real/fake matched pairs (else pairs matched in g magnitude); the network's most confident cases."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import pandas as pd  # noqa: E402

from realfake.evaluation.plots import extremes, load_cutouts, matched_pairs, mosaic  # noqa: E402

e, channels = snakemake.params.evaluate, list(snakemake.params.channels)
pred = pd.read_csv(snakemake.input.predictions, dtype={"brick": str, "rs": str})
for rows, out, title in (
    (matched_pairs(pred, e["mosaic_percentiles"]), snakemake.output.pairs,
     "Real (R) and fake (F) galaxies " + ("of matched pairs (same brick, magnitudes and size)" if "pair" in pred
                                          and (pred["pair"] > 0).all() else "matched in g magnitude")
     + "; p = network's P(fake)"),
    (extremes(pred, e["mosaic_extremes"]), snakemake.output.extremes,
     "The network's most confident calls on the test split; p = P(fake)"),
):
    cutouts = load_cutouts(pred, [r.name for r, _, _ in rows], snakemake.input.shards)
    mosaic(rows, cutouts, channels, out, title=title)
