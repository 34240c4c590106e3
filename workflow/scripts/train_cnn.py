"""Rule train_cnn: train the configured network on all training shards."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.train import fit  # noqa: E402

cfg = {"model": snakemake.params.model, "train": snakemake.params.train}
fit(snakemake.input[0], snakemake.output[0], cfg, threads=snakemake.threads)
