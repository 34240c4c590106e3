"""The verdict: which of three answers the metrics of a run give, why, and the paragraph that says so.

- ``distinguishable``: the test rejects "no difference" at ``alpha`` and the AUC's interval lies above 0.5;
- ``no_difference_detected``: it does not, this run found defects planted on its own real galaxies (the capacity
  check, realfake.evaluation.capacity: the bound, in physical units), its rule can detect some AUC (realfake.evaluation.power), the
  catalogue classifier does not separate the examples and the folds were independent; worded as a bound, never as
  "the populations are the same";
- ``inconclusive``: anything else (nothing planted was found; the run is too small; the catalogue separates the
  classes; the AUC lies below 0.5; the test and the interval disagree; the split shares bricks), with what to
  change. The training diagnostics (:func:`training_gate`) are reported, not a condition.

It also holds the built-in controls and what their verdicts must be.
"""

from __future__ import annotations

import numpy as np

from realfake import BINNED
from realfake.evaluation.diagnostics import medians
from realfake.evaluation.learning import training_note
from realfake.evaluation.stats import p_text

VERDICTS = ("distinguishable", "no_difference_detected", "inconclusive")


def where_statement(m: dict) -> str:
    """Per binned column, how many of its bins survive Holm's correction, and which when not all do."""
    parts = []
    for k, names in m.get("where", {}).items():
        n = len(m[f"by_{k}"])
        parts.append(f"{BINNED[k]}: all {n} bins" if len(names) == n else f"{BINNED[k]}: {', '.join(names)}")
    return ("Bins where the network separates the classes (Holm-corrected over all bins): " + "; ".join(parts) + "."
            if parts else "No bin of magnitude, colour, size or observing conditions separates the classes after Holm's "
            "correction.")


# More bricks than this: the per-brick p-values are the normal approximation of each brick's permutation
# distribution (exact mean and variance), computed for all bricks at once


def magnitude_statement(bins: list[dict]) -> str:
    """Where in g magnitude the network separates the populations (bins whose Holm-corrected test rejects)."""
    if not bins:
        return ""
    sep = [b for b in bins if b.get("significant")]
    if not sep:
        return "In no g-magnitude bin does the AUC differ from 0.5 after Holm's correction."
    if len(sep) == len(bins):
        return "The AUC exceeds 0.5 in every g-magnitude bin (Holm-corrected)."
    hi_sep, lo_not = max(b["hi"] for b in sep), min(b["lo"] for b in bins if not b.get("significant"))
    best = max(sep, key=lambda b: b["auc"])
    if hi_sep <= lo_not:
        return (f"Separable brighter than g = {hi_sep:.1f} (AUC up to {best['auc']:.2f} at g {best['lo']:.1f}-"
                f"{best['hi']:.1f}); no difference detected fainter.")
    ranges = ", ".join(f"{b['lo']:.1f}-{b['hi']:.1f}" for b in sep)
    return f"Separable in the g-magnitude bins {ranges} (AUC up to {best['auc']:.2f}); no difference detected elsewhere."


# --------------------------------------------------------------------------- was the network trained to capacity?


# --------------------------------------------------------------------------- the verdict


def network_rejects(m: dict, alpha: float) -> bool:
    """The network's test rejects "no difference" at ``alpha`` (Holm-corrected with the image statistics' tests
    where they joined it: evaluate.appearance_family) and its AUC interval lies above 0.5."""
    return bool(m.get("p_holm", m["p_value"]) < alpha and m["ci95"]["auc"][0] > 0.5)


def found_statistics(m: dict) -> dict:
    """The image statistics that the verdict's family found (evaluate.appearance_family)."""
    return {k: v for k, v in (m.get("image_statistics") or {}).items() if v.get("found")}


def statistic_found_text(name: str, v: dict, versus: str = "against") -> str:
    """One found statistic with its medians, paired AUC, interval and Holm p (the family's)."""
    return (f"{name.replace('_', ' ')}: {medians(v, versus)}, AUC "
            f"{v['auc']:.2f} ({v['ci95'][0]:.2f}-{v['ci95'][1]:.2f}), Holm p = {v['p_holm_family']:.2g}")


def tv_limit(m: dict) -> float:
    """The larger of the two one-sided 95% lower limits on the total-variation distance (the network's balanced
    accuracy; its AUC, stats.tv_lower_bound)."""
    return max(m["tv_lower_limit95"], m.get("tv_lower_limit95_auc", 0.0))


SCENARIO_WORDS = {"same": "an effect equal in every brick", "varying": "an effect that varies between bricks",
                  "shrinking": "an effect that shrinks with the brick's size"}  # realfake.evaluation.power.SCENARIOS


def power_statement(m: dict, alpha: float) -> str:
    """The smallest AUC the verdict's rule detects, as simulated (realfake.evaluation.power)."""
    pw = m["power"]
    sim = pw.get("simulation", {})
    fam = f", Holm-corrected over the {pw['family']} tests of its family" if pw.get("family", 1) > 1 else ""
    return (f"its rule (the network's test{fam}, and the AUC's interval above 0.5) says 'distinguishable' in "
            f"{pw['power']:.0%} of simulated runs of these bricks and pairs once the AUC reaches "
            f"{pw['min_detectable_auc']:.3f}, whether the effect is equal in every brick, varies between them or "
            f"shrinks with their size ({sim.get('simulated_runs', '?')} runs a step; total-variation distance of about "
            f"{pw['min_detectable_tv_binormal']:.2f} for binormal scores)")


def grid_found(m: dict) -> list[dict]:
    """The sensitivity grid's scenarios (make sensitivity: the whole recipe, the network trained on each) that the
    run found, where its null row was not found; [] otherwise."""
    rows = (m.get("sensitivity") or {}).get("scenarios", [])
    if any(r["kind"] == "none" and r["detected"] for r in rows):
        return []
    return [r for r in rows if r["kind"] != "none" and r["detected"]]


def capacity_blocker(cap: dict | None, grid: list[dict] = (), matched: bool = True) -> str:
    """Why neither the capacity check nor the sensitivity grid (``grid``: its scenarios found) shows a bound (""
    where one of them does). The capacity check tests the image statistics within matched pairs: it measures the
    verdict's recipe only where the statistics join the verdict's family (``matched``)."""
    from realfake.evaluation.capacity import bounds, null_found

    if grid and (cap is None or not matched or not null_found(cap)):
        return ""
    if cap is not None and not matched:
        return ("without matched pairs (shards.balance: matched) the image statistics do not decide, so the planted "
                "defects they find bound nothing; the sensitivity grid (make sensitivity: the network trained on "
                "each planted defect) can")
    if cap is None:
        return "no capacity check was run: what this run can find is not known"
    null = null_found(cap)
    if null:
        return (f"the capacity check found a difference where nothing was planted ({null['found_in']} of "
                f"{null['plantings']} plantings): its findings bound nothing")
    if not any(v["found"] for v in bounds(cap).values()):
        return (f"this run found none of the defects planted on its own real galaxies ({cap['pairs']} pairs a "
                "scenario): it could not have told a wrong injected model from a right one. To change: more bricks "
                "(examples), or larger defects in sensitivity.grid to find where its reach ends")
    return ""


def classify(m: dict, alpha: float) -> tuple[str, list[str]]:
    """The verdict class and its reasons (plain sentences), from the metrics."""
    lo, hi = m["ci95"]["auc"]
    p, mda = m["p_value"], m["power"]["min_detectable_auc"]
    p_said = p_text(p, m.get("test"))
    folds = m.get("folds", {})
    note = training_note(m.get("training"))
    reasons = []

    def said(cls: str) -> tuple[str, list[str]]:  # the class, its reasons and the training diagnostics' note
        return cls, reasons + ([note] if note else [])

    if folds.get("note"):
        reasons.append(folds["note"])
    if not np.isfinite(m["auc"]) or m["bricks_with_both_classes"] < 2:
        reasons.append(f"only {m['bricks_with_both_classes']} brick(s) of the test examples hold both classes: "
                       "no brick-level inference is possible; select more bricks")
        return "inconclusive", reasons
    found = found_statistics(m)
    p_net = m.get("p_holm", p)  # (Holm-corrected with the image statistics' tests on matched pairs)
    # a network p below alpha that its family's Holm correction lifts above it: both said, not the raw one alone
    held = f"{p_said}, {p_net:.2g} Holm-corrected with the image statistics' tests" if p_net != p else p_said
    if found and not network_rejects(m, alpha):
        names = "; ".join(statistic_found_text(k, v) for k, v in found.items())
        reasons.append("an image statistic tells the fakes from the real galaxies of their pairs (the network's test "
                       f"and the statistics', Holm-corrected together): {names}; the network did not find it "
                       f"({p_said}): what it can see is smaller than the pixels allow")
        return said("distinguishable")
    if network_rejects(m, alpha):
        reasons.append(f"labels permuted within {'matched pairs' if m.get('matched') else 'bricks'} reject 'no "
                       f"difference' ({p_said} < {alpha}"
                       + (f"; Holm-corrected with the image statistics' tests, p = {p_net:.2g}" if "p_holm" in m
                          else "") + ") and the AUC's interval lies above 0.5")
        if tv_limit(m) > 0:
            reasons.append(f"the two populations differ by a total-variation distance of at least {tv_limit(m):.3f} "
                           "(one-sided 95% lower limit)")
        return said("distinguishable")
    if hi < 0.5:
        reasons.append(f"the AUC lies below 0.5 (95% CI {lo:.3f}-{hi:.3f}): no real difference makes a classifier "
                       "anti-correlated with the truth on bricks it never saw; suspect a fluctuation of few bricks, "
                       "or a network that learned brick-level features (class shares) that reverse between folds")
        return said("inconclusive")
    if p_net < alpha or lo > 0.5:
        reasons.append(f"the test and the interval disagree ({held}, AUC 95% CI {lo:.3f}-{hi:.3f}): "
                       "marginal; more bricks are needed to decide")
        return said("inconclusive")
    blockers = []
    if folds.get("split_by") == "example":
        blockers.append("the examples were split by example, not by brick: the test and training examples share "
                        "sky, depth and PSF; set shards.split_by: brick")
    if not np.isfinite(mda):
        sim = m["power"].get("simulation", {})
        worst = sim.get("scenarios", {}).get(sim.get("worst_scenario"), {})
        blockers.append("this run is too small to detect any difference: even at AUC 0.99 its rule says "
                        f"'distinguishable' in only {worst.get('power_at_max', float('nan')):.0%} of simulated runs "
                        f"(with {SCENARIO_WORDS.get(sim.get('worst_scenario'), 'some effect')}); select more bricks")
    base = m.get("baseline")
    if base and base["p_value"] < alpha:
        base_p = p_text(base["p_value"], m.get("test"))  # the same test, on the same examples
        blockers.append(f"a classifier of catalogue quantities alone separates the {'pairs' if m.get('matched') else 'classes'} "
                        f"(AUC {base['auc']:.3f}, {base_p}): "
                        + ("the calipers did not make the pairs alike in what the catalogue measures, so the "
                           "appearance cannot be told apart from the catalogue; narrow shards.match" if m.get("matched")
                           else "the classes differ in their catalogue values, which the pixels show; set "
                                "shards.balance: matched to ask about the appearance alone"))
    cap = capacity_blocker(m.get("capacity"), grid_found(m), bool(m.get("matched")))
    if cap:
        blockers.append(cap)
    if blockers:
        reasons.append(f"no difference detected ({p_said}), but that cannot be read as a bound: " +
                       "; ".join(blockers))
        return said("inconclusive")
    reasons.append(f"no difference detected: {held}; the AUC is below {m['power']['auc_upper_limit95']:.3f} "
                   "at 95% (one-sided)")
    if m.get("capacity") and m.get("matched"):
        reasons.append(m["capacity"]["statement"].rstrip(".") + " (planted on this run's real galaxies, tested by "
                       "the verdict's image statistics with the network's test counted as not rejecting)")
    reasons.append("in the network's scores, " + power_statement(m, alpha) + "; smaller differences may exist")
    if "replicates" not in m:
        reasons.append("one training per fold (evaluate.replicates: 1): the trainings' variance is not in the "
                       "interval")
    return said("no_difference_detected")


def processing_statement(m: dict) -> str:
    """What the processing check found (the release's coadds against the injection run's), and where the reals
    could not be cut from the injection run's coadds; "" when there is nothing to say."""
    proc = m.get("processing") or {}
    parts = []
    if proc.get("differs"):
        parts.append("The injection run's coadds are not processed as the release's: " + "; ".join(proc["reasons"])
                     + ". That is the rerun's processing, not the injected model; the real galaxies were cut from the "
                     "injection run's coadds, as the fakes were, so it does not enter the answer above")
    fallback = proc.get("reals_from_release", [])
    if fallback:
        parts.append(f"In {len(fallback)} brick(s) no injection run kept its coadds, so their real galaxies were cut "
                     "from the release's coadds: there the rerun's processing can enter the answer")
    return " ".join(p + "." for p in parts)


def verdict(m: dict) -> str:
    """One paragraph written from the numbers and the verdict class."""
    (lo, hi), test = m["ci95"]["auc"], m.get("test")
    k = m.get("folds", {}).get("k", 1)
    if m.get("matched"):
        head = (f"{m['verdict_class'].upper().replace('_', ' ')} (appearance). On {m['n'] // 2} matched pairs (a "
                f"fake and a real galaxy of the same brick, magnitudes and size) in {m['bricks']} bricks, each scored "
                f"by a model that never saw its brick ({k} folds), the fake scores higher than its real galaxy with "
                f"a paired AUC of {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}; {p_text(m['p_value'], test)}, labels "
                "permuted within pairs). ")
    else:
        head = (f"{m['verdict_class'].upper().replace('_', ' ')}. On {m['n']} test examples ({m['n_real']} real, "
                f"{m['n_fake']} fake) in {m['bricks']} bricks, each scored by a model that never saw its brick "
                f"({k} folds), the brick-stratified ROC AUC is {m['auc']:.3f} "
                f"(95% CI {lo:.3f}-{hi:.3f}; {p_text(m['p_value'], test)}, labels permuted within bricks). ")
    if "baseline" in m:
        b = m["baseline"]
        d, (dlo, dhi) = m["excess_over_baseline"]["difference"], m["excess_over_baseline"]["ci95"]
        head += (("On the same pairs, a" if m.get("matched") else "A")
                 + f" classifier of catalogue quantities alone (magnitudes, colours, size, depth, PSF, exposures, "
                 f"E(B-V)) reaches AUC {b['auc']:.3f} (95% CI {b['ci95']['auc'][0]:.3f}-{b['ci95']['auc'][1]:.3f}, "
                 f"{p_text(b['p_value'], test)}): "
                 + (f"the pixels add {d:+.3f} (95% CI {dlo:+.3f} to {dhi:+.3f}). " if dlo > 0 else
                    f"the network does {'worse' if dhi < 0 else 'no better'} than that ({d:+.3f}, 95% CI {dlo:+.3f} to "
                    f"{dhi:+.3f}){': it has not learned what the catalogue already shows' if dhi < 0 else ''}. "))
    body = " ".join(r[0].upper() + r[1:] + "." for r in m["verdict_reasons"])
    where = ""
    rejects = network_rejects(m, m["power"]["alpha"])
    if m["verdict_class"] == "distinguishable" and rejects:  # (the bins are the network's scores)
        where = " " + magnitude_statement(m.get("by_mag_g", [])) + " " + where_statement(m)
    tested = m.get("image_statistics") or {}
    named = not rejects and any(v.get("found") for v in tested.values())  # (by classify's reasons already)
    if tested and not named and (m["verdict_class"] == "distinguishable" or any(v["differs"] for v in tested.values())):
        from realfake.evaluation.diagnostics import differs_statement

        where += " " + differs_statement(tested)
    grid = m.get("sensitivity", {}).get("sentence", "")  # what this run could have found (the sensitivity grid)
    tail = [grid, processing_statement(m)]
    if "population" in m:
        tail.append(m["population"]["sentence"])
    if m.get("matched"):
        tail.append("The pairs share their catalogue values, so a defect that moves the measured catalogue (a flux "
                    "or size error) shows in the population answer, not in the appearance one.")
    return head + body + where + "".join(" " + t for t in tail if t)


GLANCE_WIDTH = 118


def _short(text: str, width: int) -> str:
    import textwrap

    return textwrap.shorten(text, width, placeholder=" ...")


def at_a_glance(m: dict, results: str = "results/evaluation") -> list[str]:
    """The verdict in at most ten lines: the answer, its number with its interval and p-value, what found it or the
    bound, the population and processing answers, and where the full paragraph and the figures are."""
    import textwrap

    (lo, hi), test = m["ci95"]["auc"], m.get("test")
    cls = m["verdict_class"].upper().replace("_", " ")
    on = f"{m['n'] // 2} matched pairs" if m.get("matched") else f"{m['n']} examples"
    items = [("", f"{cls} ({'appearance' if m.get('matched') else 'fakes against reals'}; {on} in {m['bricks']} "
                  "bricks)"),
             ("  ", f"network: {'paired ' if m.get('matched') else ''}AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
                    f"{p_text(m['p_value'], test)}")]
    found = found_statistics(m)
    if m["verdict_class"] == "distinguishable":
        if found:
            items.append(("  ", _short("found by " + "; ".join(statistic_found_text(k, v, "vs") for k, v in found.items()),
                                       2 * GLANCE_WIDTH)))
        if network_rejects(m, m["power"]["alpha"]):
            items.append(("  ", _short(f"total-variation distance >= {tv_limit(m):.3f} (95%). "
                                       + magnitude_statement(m.get("by_mag_g", [])), 2 * GLANCE_WIDTH)))
    elif m["verdict_class"] == "no_difference_detected":
        items.append(("  ", f"AUC below {m['power']['auc_upper_limit95']:.3f} (95%); the verdict's rule detects AUC >= "
                            f"{m['power']['min_detectable_auc']:.3f} in {m['power']['power']:.0%} of simulated runs"))
        if m.get("capacity"):
            items.append(("  ", _short("bound: " + m["capacity"]["statement"], 3 * GLANCE_WIDTH)))
    else:
        why = [r for r in m["verdict_reasons"] if not r.startswith("training diagnostics")] or m["verdict_reasons"]
        items.append(("  ", _short("why: " + why[-1], 2 * GLANCE_WIDTH)))
    pop = m.get("population") or {}
    if np.isfinite(pop.get("auc", np.nan)):
        plo, phi = pop["ci95"]["auc"]
        carried = ", ".join(q["name"] for q in pop.get("by_quantity", []) if q.get("significant"))
        items.append(("", f"Population: {'DISTINGUISHABLE' if pop['differs'] else 'NO DIFFERENCE DETECTED'} (catalogue "
                          f"AUC {pop['auc']:.3f}, 95% CI {plo:.3f}-{phi:.3f}, on {pop['n_real'] + pop['n_fake']} "
                          "examples" + (f"; by {_short(carried, 60)}" if pop["differs"] and carried else "") + ")"))
    proc = m.get("processing") or {}
    if proc.get("n"):
        items.append(("", _short("Processing (the release's coadds against the injection run's): " + (
            "DIFFER: " + "; ".join(proc["reasons"]) if proc.get("differs") else "no difference beyond the tolerances"),
            GLANCE_WIDTH)))
    items.append(("", f"Full verdict: {results}/metrics.json (\"verdict\"); figures: {results}/; all: make report"))
    blocks = [textwrap.wrap(text, GLANCE_WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")
              for indent, text in items]
    while sum(map(len, blocks)) > 10:  # the longest block loses its last line, said by " ..."
        b = max(blocks[:-1], key=len)
        del b[-1]
        indent = len(b[-1]) - len(b[-1].lstrip())
        b[-1] = " " * indent + _short(b[-1] + " ...", GLANCE_WIDTH - indent)
    return [line for b in blocks for line in b]


# The built-in controls (config/presets/<name>.yaml) and what their metrics must show
CONTROLS = {
    # the null test's fakes are drawn like the real galaxies: no difference, with the bound the run shows (one run
    # at alpha = 0.05 rejects a true null once in twenty: the null calibration measures that rate)
    "null-test": "the verdict is 'no_difference_detected', with the planted defects it found as its bound",
    "positive-control": "the verdict is 'distinguishable' with the AUC's 95% interval above 0.8",
}


def control_outcome(m: dict, control: str) -> tuple[bool, str]:
    """Whether a control run's metrics (``metrics.json``) came out as they must (:data:`CONTROLS`), and a line
    saying so with the numbers."""
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {sorted(CONTROLS)}, not {control!r}")
    (lo, hi), p, kind = m["ci95"]["auc"], m["p_value"], m["verdict_class"]
    ok = kind == "no_difference_detected" if control == "null-test" else kind == "distinguishable" and lo > 0.8
    numbers = (f"{kind}: AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}), permutation {p_text(p, m.get('test'))}, "
               f"{m['n']} test examples in {m['bricks']} bricks")
    return ok, f"{control} {'passed' if ok else 'FAILED'}: {numbers}; required: {CONTROLS[control]}"
