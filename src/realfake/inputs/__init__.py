"""The inputs: a Data Release's and an injection run's files, where they live (every layout), and their brick
tables, catalogues, coadds (decoded tile by tile) and the selection of comparable real galaxies."""
