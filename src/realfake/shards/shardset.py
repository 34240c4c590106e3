"""The shards as their readers see them: one split's files, read once, and the shard directory's manifest and summary.

``realfake.shards.build`` writes a shard directory (``x<split>_<N>.npy`` pixels,
``y<split>_<N>.npy`` labels, optional ``w<split>_<N>.npy`` weights,
``manifest.csv``, ``summary.json``); :class:`ShardSet` lists one split of it
once and holds what training and evaluation ask of it (files, example shape,
lengths, class counts, weight files), so that none of them lists the directory
or reads a header again. Nothing here reads brick files or FITS: training
imports this module, never the cutout code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realfake import FAKE, REAL


def load_shard(path: str | Path, mmap_mode: str | None = None) -> np.ndarray:
    """One ``.npy`` shard, never unpickled: a file holding Python objects (or not an array at all) is refused
    with a message naming it, before anything in it is run."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a plain numeric .npy array, refused ({err}); "
                         "shards are never unpickled: rebuild them with build_shards") from None


def shard_files(shard_dir: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(x, y) file pairs of a split, in shard order."""
    shard_dir = Path(shard_dir)
    xs = sorted(shard_dir.glob(f"x{split}_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
    return [(x, shard_dir / ("y" + x.name[1:])) for x in xs]


@dataclass(frozen=True)
class ShardSet:
    """One split of a shard directory, listed once: its files, example shape, lengths and class counts.

    ``weights``: the ``w<split>_N.npy`` files, one per shard, or None when any
    is missing. An empty split (no shards) has no example shape.
    """

    directory: Path
    split: str
    x: tuple[Path, ...]
    y: tuple[Path, ...]
    weights: tuple[Path, ...] | None
    example_shape: tuple[int, ...] | None
    lengths: tuple[int, ...]
    class_counts: tuple[int, int]  # (real, fake)

    @classmethod
    def read(cls, shard_dir: str | Path, split: str) -> "ShardSet":
        """List the split's shards and read their labels (a byte an example) and the first pixel shard's header."""
        pairs = shard_files(shard_dir, split)
        labels = [load_shard(y) for _, y in pairs]
        counts = np.zeros(2, np.int64)
        for y in labels:
            counts += np.bincount(y, minlength=2)[:2]
        weights = [y.with_name("w" + y.name[1:]) for _, y in pairs]
        return cls(directory=Path(shard_dir), split=split, x=tuple(x for x, _ in pairs), y=tuple(y for _, y in pairs),
                   weights=tuple(weights) if weights and all(w.exists() for w in weights) else None,
                   example_shape=tuple(load_shard(pairs[0][0], mmap_mode="r").shape[1:]) if pairs else None,
                   lengths=tuple(len(y) for y in labels), class_counts=(int(counts[REAL]), int(counts[FAKE])))

    @property
    def n_examples(self) -> int:
        return sum(self.lengths)

    def batches(self, batch_size: int, drop_remainder: bool = False) -> int:
        """Batches of ``batch_size`` in one pass over the split."""
        n = self.n_examples
        return n // batch_size if drop_remainder else -(-n // batch_size)

    def balanced_class_weights(self) -> list[float]:
        """``n / (2 n_c)`` per class: both classes weigh the same in the loss (1, 1 when balanced)."""
        if min(self.class_counts) == 0:
            raise ValueError(f"train.class_weight: balanced needs both classes in the {self.split} split; counts "
                             f"{np.array(self.class_counts)}")
        return [float(self.n_examples / (2.0 * c)) for c in self.class_counts]


def read_summary(shard_dir: str | Path) -> dict:
    """A shard directory's ``summary.json`` (channels, normalisation statistics, class counts per split)."""
    return json.loads((Path(shard_dir) / "summary.json").read_text())


def read_manifest(shard_dir: str | Path):
    """A shard directory's ``manifest.csv``, one row per example, with its names (brick, region, rs, type) as text."""
    import pandas as pd

    return pd.read_csv(Path(shard_dir) / "manifest.csv", dtype={"brick": str, "region": str, "rs": str, "type": str})
