"""realfake: can a CNN tell injected (fake) galaxies from real ones?

The package holds every piece of logic of the Snakemake workflow; the rule
scripts in ``workflow/scripts`` only unpack the ``snakemake`` object and call
one function from here.
"""

__version__ = "0.1.0"

BANDS = ("g", "r", "z")
REAL, FAKE = 0, 1
