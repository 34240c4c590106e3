"""Rule mock_release: render the built-in synthetic release."""

from realfake.logs import to_file

to_file(snakemake.log[0])

from dataclasses import fields  # noqa: E402

from realfake.synthetic.release import MockConfig, make_release  # noqa: E402

s = dict(snakemake.params.synthetic)
s["rs"] = tuple(s["rs"])
s["regions"] = {r: tuple(b) for r, b in s.get("regions", {}).items()}
keys = {f.name for f in fields(MockConfig)} - {"bricks"}
cfg = MockConfig(bricks=tuple(snakemake.params.bricks), **{k: v for k, v in s.items() if k in keys})
make_release(cfg, snakemake.output[0], workers=snakemake.threads)
