"""realfake: can a CNN tell injected (fake) galaxies from real ones?

The package holds every piece of logic of the Snakemake workflow; the rule
scripts in ``workflow/scripts`` only unpack the ``snakemake`` object and call
one function from here.
"""

__version__ = "0.1.0"

BANDS = ("g", "r", "z")
REAL, FAKE = 0, 1
# The columns the metrics are binned in (of the predictions table) and their names in figures and sentences
BINNED = {"mag_g": "g magnitude", "rz": "r - z colour", "size": "half-light radius (arcsec)",
          "ivar_g": "g depth (median inverse variance)", "ivar_r": "r depth (median inverse variance)",
          "ivar_z": "z depth (median inverse variance)", "psfsize_r": "r PSF FWHM (arcsec)",
          "nobs_r": "r exposures", "ebv": "E(B-V)"}
