"""Bricks to cutouts: one brick's real galaxies and fakes cut into 64x64 stamps of g, r, z and inverse variances
(one HDF5 file per brick), jobs of brick batches, and the processing check."""
