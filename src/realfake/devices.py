"""Which TensorFlow is installed, and whether it sees the GPUs the job was given.

TensorFlow is an extra of realfake, one build or the other: ``cpu`` (tensorflow-cpu) or ``gpu``
(tensorflow[and-cuda]); both provide the module ``tensorflow``. Nothing here imports TensorFlow at
module level: :func:`require_tensorflow` only looks for it, so that ``train.env`` can still be
applied before TensorFlow starts.
"""

from __future__ import annotations

import importlib.util
import sys

INSTALL_HINT = ("realfake installs TensorFlow as an extra, one build or the other: `pip install '.[cpu]'` "
                "(tensorflow-cpu; CPU and KNL nodes; what `make setup` installs) or `pip install '.[gpu]'` "
                "(tensorflow[and-cuda]; a GPU node); conda users: envs/tf.yaml or envs/tf-gpu.yaml. Never both "
                "builds in one environment: docs/install.md")


def require_tensorflow() -> None:
    """Raise a ModuleNotFoundError naming both extras when no TensorFlow is installed (TensorFlow is not imported)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError(f"TensorFlow is not installed in this environment ({sys.prefix}). {INSTALL_HINT}",
                                  name="tensorflow")
