"""The nuisance baseline: what catalogue quantities alone tell about fake against real.

A gradient-boosted classifier (scikit-learn's histogram gradient boosting) on
per-example quantities that need no pixels beyond a summary: magnitudes,
colours, size, the fraction of the stamp without data, its depth (median
inverse variance per band) and the observing conditions at the source (PSF
size and exposures per band, E(B-V)), trained and scored on the same folds as
the CNN (missing values, as in older brick files, are handled by the model).
The CNN's AUC in excess of this one is what the pixels add; where this one
already separates the classes, the injection differs in its catalogue (its
magnitudes, colours or sizes, or its depth through where fakes were placed)
before any image is looked at.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ("mag_g", "mag_r", "mag_z", "g_r", "r_z", "size", "frac_nodata", "ivar_g", "ivar_r", "ivar_z",
            "psfsize_g", "psfsize_r", "psfsize_z", "nobs_g", "nobs_r", "nobs_z", "ebv")


def features_of(man: pd.DataFrame, names=FEATURES) -> pd.DataFrame:
    """The columns ``names`` of a manifest or source table, the colours g_r and r_z derived, absent ones NaN."""
    f = pd.DataFrame(index=man.index)
    for c in names:
        if c == "g_r":
            f[c] = man["mag_g"] - man["mag_r"]
        elif c == "r_z":
            f[c] = man["mag_r"] - man["mag_z"]
        else:
            f[c] = man[c] if c in man else np.nan
    return f.astype(float)


def cross_fit(man: pd.DataFrame, seed: int = 1, features=None) -> pd.DataFrame:
    """P(fake) of every example of ``man`` (a shard manifest whose ``split`` names its fold) from a model trained
    on the other folds, on the columns ``features`` of ``man`` (default: :data:`FEATURES`, derived from it);
    columns brick, rs, id, label, fold, p_fake."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    folds = sorted(s for s in man["split"].unique() if str(s).startswith("fold"))
    if not folds:  # train/valid/test splits: one model, trained on train and valid, scores test
        folds, train_of = ["test"], {"test": man["split"] != "test"}
    else:
        train_of = {k: man["split"] != k for k in folds}
    x, y = (features_of(man) if features is None else man[list(features)].astype(float)), man["label"].to_numpy(int)
    out = []
    for k in folds:
        tr, te = train_of[k].to_numpy(), (man["split"] == k).to_numpy()
        if len(np.unique(y[tr])) < 2:
            p = np.full(int(te.sum()), 0.5)
        else:
            clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, early_stopping=True,
                                                 validation_fraction=0.2, random_state=seed)
            clf.fit(x[tr], y[tr])
            p = clf.predict_proba(x[te])[:, 1]
        part = man.loc[te, ["brick", "rs", "id", "label"]].copy()
        part["fold"] = int(k[4:]) if k.startswith("fold") else 0
        part["p_fake"] = p
        out.append(part)
    res = pd.concat(out)  # (the rows keep their index in ``man``)
    res.attrs["features"] = list(FEATURES if features is None else features)
    return res
