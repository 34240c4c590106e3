"""Did the network learn? The training diagnostics of each fold's history: reported beside the verdict, never a
condition of it."""

from __future__ import annotations

import math

import numpy as np


def training_gate(histories: dict, epochs: int, gate: dict, monitor: str = "val_loss") -> dict:
    """Did each fold's network learn, converge and generalise? From its ``history.csv`` (one row per epoch).

    - learned: over the last ``gate.last_epochs`` epochs, training loss below ln 2 - ``gate.min_loss_drop`` or
      training AUC above ``gate.min_train_auc``;
    - converged: early stopping fired (fewer epochs than ``epochs``) at a best epoch other than the first, or the
      training loss changed by less than ``gate.max_loss_change`` (relative) over the last epochs;
    - generalises: at the kept epoch (best ``monitor``, as early stopping chose it), training AUC minus validation
      AUC at most ``gate.max_auc_gap``, and the validation loss did not rise from the first epoch while the
      training loss fell (memorised bricks).
    """
    folds, reasons = [], []
    k = int(gate["last_epochs"])
    for fold, h in sorted(histories.items()):
        h = h.reset_index(drop=True)
        last = h.tail(k)
        loss, auc = float(last["loss"].mean()), float(last["auc"].mean()) if "auc" in h else float("nan")
        learned = bool(loss < math.log(2) - gate["min_loss_drop"] or auc > gate["min_train_auc"])
        has_val = "val_loss" in h and h["val_loss"].notna().any()
        if has_val and monitor in h and h[monitor].notna().any():
            best = int(h[monitor].idxmax() if monitor == "val_auc" else h[monitor].idxmin())
        else:
            best = len(h) - 1
        stopped_early = len(h) < epochs
        ref = h["loss"].iloc[max(0, len(h) - 1 - k)]
        change = float(abs(h["loss"].iloc[-1] - ref) / ref) if ref else float("nan")
        memorised = bool(has_val and len(h) > 2 and int(h["val_loss"].idxmin()) == 0
                         and h["val_loss"].iloc[-1] > h["val_loss"].iloc[0] and h["loss"].iloc[-1] < h["loss"].iloc[0])
        converged = bool((stopped_early and best > 0) or (len(h) > k and change < gate["max_loss_change"]))
        gap = float(h["auc"].iloc[best] - h["val_auc"].iloc[best]) if has_val and "val_auc" in h else float("nan")
        generalises = bool(has_val and np.isfinite(gap) and gap <= gate["max_auc_gap"] and not memorised)
        row = {"fold": fold, "epochs_run": len(h), "stopped_early": stopped_early, "best_epoch": best + 1,
               "train_loss": loss, "train_auc": auc, "loss_change": change,
               "val_auc_at_best": float(h["val_auc"].iloc[best]) if has_val and "val_auc" in h else float("nan"),
               "auc_gap": gap, "learned": learned, "converged": converged, "generalises": generalises,
               "memorised": memorised}
        folds.append(row)
        name = f"fold {fold}"
        if not learned:
            reasons.append(f"{name}: the network did not learn (training loss {loss:.4f} against ln 2 = 0.6931, "
                           f"training AUC {auc:.3f} over the last {k} epochs)")
        if memorised:
            reasons.append(f"{name}: the validation loss rose from the first epoch while the training loss fell: "
                           "the network memorised its training bricks")
        elif not has_val:
            reasons.append(f"{name}: no validation split, so generalisation cannot be checked")
        elif not generalises:
            reasons.append(f"{name}: training AUC exceeds validation AUC by {gap:.3f} (> {gate['max_auc_gap']})")
        if not converged and len(h) <= k:
            reasons.append(f"{name}: only {len(h)} epoch(s), too few to tell whether training converged")
        elif not converged:
            reasons.append(f"{name}: not converged (training loss still changing by {change:.1%} over the last "
                           f"{k} epochs, and early stopping did not fire)")
    passed = bool(folds) and all(f["learned"] and f["converged"] and f["generalises"] for f in folds)
    return {"passed": passed, "folds": folds, "reasons": reasons, "thresholds": dict(gate)}


def training_note(gate: dict | None) -> str:
    """The training diagnostics, where some fold failed them: reported beside the verdict, never a condition of it
    (a network well trained on two identical populations sits at ln 2, as one that learned nothing does; what a
    run can find is shown by the planted defects instead)."""
    if not gate or gate["passed"]:
        return ""
    return (f"training diagnostics: {training_counts(gate)} (metrics.json, training; reported, not a condition of "
            "the verdict: the planted defects show what this run finds)")


def training_counts(gate: dict) -> str:
    """"3 of 5 folds did not learn, 1 of 5 folds did not converge": the folds failing each training diagnostic."""
    rows = gate["folds"]
    counts = [(sum(not f[k] for f in rows), what) for k, what in (("learned", "did not learn"),
                                                                  ("converged", "did not converge"),
                                                                  ("generalises", "did not generalise"))]
    return ", ".join(f"{n} of {len(rows)} folds {what}" for n, what in counts if n)
