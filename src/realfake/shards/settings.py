"""The ``shards:`` block of the config as the shard stage reads it: :class:`ShardConfig`, the schema's defaults
filled in, checked on creation (the census and the plan both take it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from realfake.schema import schema_defaults

BALANCE = ("none", "brick", "matched", "undersample", "weights")
SPLIT_BY = ("brick", "example")


# The schema's defaults of the shards: block (their one home)
_DEFAULTS = schema_defaults("shards")


@dataclass(frozen=True)
class ShardConfig:
    """The ``shards:`` block of the config. The defaults are the schema's; ``size``, ``test_fraction`` and ``seed``,
    which the schema requires, default to the reference's values for callers without a config."""

    size: int = 512
    test_fraction: float = 0.2
    validation_fraction: float = _DEFAULTS["validation_fraction"]
    seed: int = 1
    # none | brick (each brick: its majority class undersampled to its minority's count; a brick with one class
    # drops out) | matched (each brick: its fakes paired with reals of the same catalogue values) | undersample (the majority class, globally) | weights (per-example, in w<split>_N.npy)
    balance: str = _DEFAULTS["balance"]
    # balance: matched: quantity -> caliper, the largest difference within a pair (census.match_pairs)
    match: dict = field(default_factory=lambda: dict(_DEFAULTS["match"]))
    # keep reals so that their g-magnitude histogram follows the fakes'
    match_magnitude: bool = _DEFAULTS["match_magnitude"]
    match_bins: tuple = tuple(_DEFAULTS["match_bins"])
    memory_mb: float = _DEFAULTS["memory_mb"]  # bound on the memory the shuffle uses for pixels
    split_by: str = _DEFAULTS["split_by"]  # brick: each brick's examples in one split | example: exact split sizes
    # >= 2: cross-fitting, the examples in that many folds (fold<k>, of whole bricks with split_by: brick) instead
    # of train/valid/test splits; each fold is tested by a model trained on the others (realfake.evaluation.folds)
    folds: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"shards.size must be >= 1, not {self.size}")
        if not (0 < self.test_fraction < 1 and 0 <= self.validation_fraction < 1):
            raise ValueError("shards.test_fraction must be in (0, 1) and shards.validation_fraction in [0, 1)")
        if self.test_fraction + self.validation_fraction >= 1:
            raise ValueError("shards.test_fraction + shards.validation_fraction must be < 1: no training split left")
        if self.balance not in BALANCE:
            raise ValueError(f"shards.balance must be one of {BALANCE}, not {self.balance!r}")
        bad = {k: v for k, v in self.match.items() if not (isinstance(v, (int, float)) and v > 0)}
        if self.balance == "matched" and (not self.match or bad):
            raise ValueError(f"shards.match must name quantities with calipers > 0 (balance: matched), not {self.match}")
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"shards.split_by must be one of {SPLIT_BY}, not {self.split_by!r}")
        if self.folds < 0 or self.folds == 1:
            raise ValueError(f"folds must be 0 (train/valid/test splits) or >= 2, not {self.folds}")

    @property
    def groups(self) -> tuple:
        """The shard groups, in the order their examples are written: the folds, or test, valid, train."""
        return tuple(f"fold{k}" for k in range(self.folds)) if self.folds else ("test", "valid", "train")

    @classmethod
    def from_config(cls, cfg: dict) -> "ShardConfig":
        cfg = dict(cfg)
        # how many jobs write the shards is not a property of the shards (their bytes do not depend on it)
        cfg.pop("gather_jobs", None)
        if "match_bins" in cfg:
            cfg["match_bins"] = tuple(cfg["match_bins"])
        return cls(**cfg)
