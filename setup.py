"""The one thing pyproject.toml cannot say without a warning: the stamp-cutting kernels (src/realfake/cutouts/_stamps.c).

Optional: without a C compiler the install goes on, and realfake.cutouts.stamps cuts with numpy instead (the same
stamps, bit for bit; cutting takes about twice as long).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("realfake.cutouts._stamps", ["src/realfake/cutouts/_stamps.c"], optional=True,
                             extra_compile_args=["-O3", "-Wall"])])
