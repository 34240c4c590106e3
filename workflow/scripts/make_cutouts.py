"""Rule make_cutouts: one brick's real and fake cutouts into one HDF5 file."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.cutouts import make_brick_file  # noqa: E402

release, cut = snakemake.params.release, snakemake.params.cutouts
make_brick_file(
    snakemake.output[0],
    snakemake.wildcards.brick,
    release["root"],
    release["injection_root"],
    release["rs"],
    snakemake.params.selection,
    cut["size"],
    cut["channels"],
    config_hash=snakemake.params.config_hash,
    max_frac_nodata=cut["max_frac_nodata"],
)
