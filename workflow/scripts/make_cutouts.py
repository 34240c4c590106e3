"""Rule make_cutouts: the bricks of one batch, each into its own HDF5 file in the batch directory."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.cutouts.batches import CutoutSettings, run_batch  # noqa: E402

p = snakemake.params
settings = CutoutSettings.from_config(p.settings, p.config_hash, on_missing=p.on_missing, on_error=p.on_error)
run_batch(p.bricks, snakemake.output[0], settings, workers=snakemake.threads)
