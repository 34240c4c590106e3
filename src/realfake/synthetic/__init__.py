"""The synthetic release: a small Data Release and injection run in the exact on-disk layout of real ones, rendered
with galsim, for runs and tests without real data."""
