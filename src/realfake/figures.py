"""Figure helpers every stage draws with: saving a figure (PNG and PDF, atomically), colour composites of
g, r, z stamps, and grids of image panels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# The Legacy Survey viewer's colour composite: band -> (RGB plane, scale)
RGB_SCALES = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}


def rgb_composite(planes: dict, m: float = 0.03, q: float = 20.0) -> np.ndarray:
    """g, r, z mapped to RGB with an asinh stretch (Lupton et al. 2004, as the viewer does)."""
    shape = next(iter(planes.values())).shape
    mean = np.zeros(shape)
    for b, img in planes.items():
        mean += np.maximum(0, img * RGB_SCALES[b][1] + m)
    mean /= len(planes)
    f = np.arcsinh(q * mean) / np.sqrt(q)
    mean += (mean == 0) * 1e-6
    rgb = np.zeros(shape + (3,))
    for b, img in planes.items():
        plane, scale = RGB_SCALES[b]
        rgb[..., plane] = (img * scale + m) * f / mean
    return np.clip(rgb, 0, 1)


def save(fig, path: str | Path, dpi: int = 120) -> None:
    """Write ``path`` (PNG) and the same figure as vector graphics beside it (``.pdf``), each atomically."""
    from realfake.atomic import atomic_path

    path = Path(path)
    for out, kw in ((path, {"dpi": dpi}), (path.with_suffix(".pdf"), {})):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, **kw)
    plt.close(fig)


def image_grid_labels(axes, names) -> None:
    """A grid of image panels: column names on top, no ticks."""
    for c, name in enumerate(names):
        axes[0, c].set_xlabel(name)
        axes[0, c].xaxis.set_label_position("top")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
