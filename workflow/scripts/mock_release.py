"""Rule mock_release: render the built-in synthetic release."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from realfake.mock import MockConfig, make_release  # noqa: E402

s = snakemake.params.synthetic
cfg = MockConfig(
    bricks=tuple(snakemake.params.bricks),
    rs=tuple(s["rs"]),
    image_size=s["image_size"],
    seed=s["seed"],
    schema=s["schema"],
    fake_model=s["fake_model"],
    fake_psf=s["fake_psf"],
    fake_flux_scale=s["fake_flux_scale"],
    min_fake_separation=s["min_fake_separation"],
    regions={r: tuple(b) for r, b in s["regions"].items()},
    injection_layout=s["injection_layout"],
)
make_release(cfg, snakemake.output[0], workers=snakemake.threads)
