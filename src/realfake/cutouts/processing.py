"""The processing check: the same real galaxies' stamps cut from the Data Release's coadds and from the injection
run's coadds, compared band by band.

The injection run is a rerun of the pipeline with fakes added; where it processed the CCDs differently (another sky
level, depth, noise, PSF or astrometry), a network can tell its stamps from the release's by that alone. Reals are
cut from the injection run's coadds for that reason (:mod:`realfake.cutouts.cut`); this check says whether, and how,
the two coadds of the same sky differ: per stamp and band a few cheap statistics (:func:`stamp_statistics`), their
paired differences (:func:`compare`), the brick-clustered means with Holm-corrected tests against tolerances
(:func:`summarise`), and a figure (:func:`processing_figure`).

Moments are Gaussian-weighted (adaptive: the weight follows the centroid). For a Gaussian profile of variance s^2
per axis under a weight of variance w^2 per axis the weighted moment is t = 2 s^2 w^2 / (s^2 + w^2), about a third
of the unweighted T = 2 s^2 at the sizes of the PSF, and T = t / (1 - t / 2w^2); so T_inj - T_rel = (t_inj - t_rel)
/ k with k = (1 - t_rel / 2w^2)(1 - t_inj / 2w^2). ``k_<b>`` carries (1 - t / 2w^2)^2 per stamp, their geometric
mean per pair, and the PSF's change is read from mean(dt) / mean(k): exact for Gaussian profiles (the tests'), and
undiluted by the weight (mean(dt) / T_psf alone would make a 10% wider PSF look 3.5% wider).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

BANDS_ORDER = ("g", "r", "z")
WEIGHT_SIGMA = 2.5  # pixels: the Gaussian weight of the centroid and the second moment
ANNULUS = 0.6  # the sky annulus: radius > ANNULUS * S / 2 from the stamp's centre
MIN_SNR = 5.0  # centroid and moment only where the weighted flux has this signal-to-noise ratio
CENTROID_ITERATIONS = 3
FWHM_PER_SIGMA = 2.3548
MAD_TO_SIGMA = 1.4826
PIXSCALE = 0.262  # arcsec per pixel, the Legacy Surveys' coadds
TOLERANCES = {"sky_offset": 0.02, "depth": 0.03, "noise": 0.03, "psf": 0.02, "astrometry": 0.02}
QUANTITIES = ("sky_offset", "depth", "noise", "psf", "astrometry")


def _bands(channels) -> list[str]:
    """The image bands among ``channels`` (names not starting with ``ivar_``), g, r, z first."""
    bands = [c for c in channels if not str(c).startswith("ivar_")]
    return sorted(bands, key=lambda b: (BANDS_ORDER.index(b) if b in BANDS_ORDER else len(BANDS_ORDER), b))


def _row_constant(values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``values`` (N, M): whether its entries where ``ok`` are all one value (and there are some), and
    that value (the largest good entry)."""
    hi = np.where(ok, values, np.float32(-np.inf)).max(axis=1)
    lo = np.where(ok, values, np.float32(np.inf)).min(axis=1)
    return (lo == hi) & ok.any(axis=1), hi


def _sorted_median(v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The median of each sorted row's first ``k`` entries (NaN where k = 0)."""
    lo = np.take_along_axis(v, np.maximum((k - 1) // 2, 0)[:, None], axis=1)[:, 0].astype(np.float64)
    hi = np.take_along_axis(v, np.clip(k // 2, 0, v.shape[1] - 1)[:, None], axis=1)[:, 0].astype(np.float64)
    return np.where(k > 0, 0.5 * (lo + hi), np.nan)


def _masked_sort(values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``values`` (N, M) sorted (float32) with its entries where not ``ok`` moved to the end as +inf,
    and the rows' counts of good entries: rows of different counts in one sort, no loop (numpy's sort is faster
    than its partition-based median here)."""
    v = np.where(ok, values, np.float32(np.inf)).astype(np.float32, copy=False)
    v.sort(axis=1)
    return v, ok.sum(axis=1)


def _masked_median(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row of ``values`` (N, M) the median of the entries where ``ok``; NaN where none. Rows whose good entries
    are all one value (an inverse variance, often) skip the sort."""
    const, value = _row_constant(values, ok)
    out = np.where(const, value.astype(np.float64), np.nan)
    rest = np.flatnonzero(~const & ok.any(axis=1))
    if len(rest):
        out[rest] = _sorted_median(*_masked_sort(values[rest], ok[rest]))
    return out


def _kth_distance(v: np.ndarray, k: np.ndarray, m: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per row of the sorted ``v`` (its first ``k`` entries good), the ``h``-th smallest |v - m| (1 <= h <= k): the
    h nearest entries are a run of the sorted row, so it is the least, over runs of h, of the run's larger end
    distance; no second sort. Rows are taken together by their count (few distinct ones: slices, not gathers)."""
    out = np.empty(len(v))
    mm = m.astype(np.float32)
    for kk, hh in np.unique(np.column_stack([k, h]), axis=0):
        rows = np.flatnonzero((k == kk) & (h == hh))
        sel = v[rows] if len(rows) < len(v) else v
        r = mm[rows, None]
        cost = np.maximum(r - sel[:, : kk - hh + 1], sel[:, hh - 1 : kk] - r)
        out[rows] = cost.min(axis=1)
    return out


def _mad_sorted(v: np.ndarray, k: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The median absolute deviation from ``m`` of each sorted row's first ``k`` entries (NaN where k = 0)."""
    kk = np.maximum(k, 1)
    h = (kk + 1) // 2
    d = _kth_distance(v, kk, m, h)
    even = (kk % 2 == 0) & (kk > 1)
    if even.any():
        d2 = _kth_distance(v[even], kk[even], m[even], h[even] + 1)
        d[even] = 0.5 * (d[even] + d2)
    return np.where(k > 0, d, np.nan)


def _weighted_moments(img: np.ndarray, w: float, n_iter: int = CENTROID_ITERATIONS):
    """Adaptive Gaussian-weighted centroid (x, y, relative to the stamp's centre), second moment Ixx + Iyy about it
    and weighted flux of sky-subtracted images ``img`` (N, S, S), weight sigma ``w``. Each iteration recentres the
    weight at the centroid, its step scaled by 1 / (1 - t / 2w^2) (exact for a Gaussian: one step converges)."""
    n, s, _ = img.shape
    c = np.arange(s, dtype=np.float64) - (s - 1) / 2
    xc, yc = np.zeros(n), np.zeros(n)
    for it in range(n_iter + 1):
        u, v = c[None, :] - xc[:, None], c[None, :] - yc[:, None]
        wx, wy = np.exp(-0.5 * (u / w) ** 2), np.exp(-0.5 * (v / w) ** 2)
        bx = np.stack([wx, wx * u, wx * u * u], axis=-1)  # (N, S, 3) over columns (x)
        by = np.stack([wy, wy * v, wy * v * v], axis=-1)  # over rows (y)
        rows = (img @ bx.astype(np.float32)).astype(np.float64)  # (N, S, 3): sums over x per row
        m = np.einsum("nia,nib->nab", by, rows)  # m[a, b] = sum w v^a u^b I
        flux = m[:, 0, 0]
        good = flux > 0
        f = np.where(good, flux, 1.0)
        mx, my = m[:, 0, 1] / f, m[:, 1, 0] / f
        t = m[:, 0, 2] / f - mx**2 + m[:, 2, 0] / f - my**2
        gain = np.clip(1 / np.clip(1 - t / (2 * w * w), 1e-6, None), 1.0, 4.0)
        gain = np.where(np.isfinite(gain), gain, 1.0)
        step_x = np.where(good & np.isfinite(mx), np.clip(mx * gain, -3, 3), 0.0)
        step_y = np.where(good & np.isfinite(my), np.clip(my * gain, -3, 3), 0.0)
        if it < n_iter:
            xc, yc = xc + step_x, yc + step_y
    x, y = xc + step_x, yc + step_y
    norm = np.sqrt((wx**2).sum(1) * (wy**2).sum(1))  # sqrt(sum w^2): the weighted flux's noise per unit sigma
    bad = ~good | (np.abs(x) > s / 4) | (np.abs(y) > s / 4)
    return (np.where(bad, np.nan, x), np.where(bad, np.nan, y), np.where(bad, np.nan, t),
            np.where(good, flux, np.nan), norm)


def stamp_statistics(stamps: np.ndarray, channels, psf_fwhm=None) -> pd.DataFrame:
    """Per stamp and band b, cheap statistics of one coadd's pixels, to compare the same galaxies in two coadds.

    ``stamps`` (N, S, S, C), channels named by ``channels`` (bands b and their inverse variances ``ivar_b``, any
    order; pixels with ivar <= 0 or not finite are no data). Columns per band: ``sky_b`` (median of the annulus
    r > 0.6 S/2 from the centre), ``sigma_b`` (1 / sqrt(median ivar)), ``chi_b`` (1.4826 MAD of (pixel - sky) x
    sqrt(ivar) in the annulus: 1 where the inverse variance is right), ``x_b``, ``y_b`` (adaptive Gaussian-weighted
    centroid, pixels from the centre (S-1)/2), ``t_b`` (weighted Ixx + Iyy about it, pixels^2), ``snr_b`` (weighted
    flux over its noise), ``k_b`` (dt/dT, see the module's docstring). x, y, t are NaN below S/N 5.
    The weight's sigma is 2.5 pixels, or ``psf_fwhm`` / 2.3548 (pixels; a number or {band: number}) where given:
    use the same for both coadds compared. Vectorised over N; a few sorts of the annulus per band dominate (about
    0.3-0.6 ms per 64x64x6 stamp on one core).
    """
    stamps = np.asarray(stamps)
    if stamps.ndim != 4 or stamps.shape[-1] != len(channels):
        raise ValueError(f"stamps of shape {stamps.shape} for channels {list(channels)}")
    n, s = stamps.shape[0], stamps.shape[1]
    channels = [str(c) for c in channels]
    yy, xx = np.indices((s, s)) - (s - 1) / 2
    ring_idx = np.flatnonzero(np.hypot(xx, yy).ravel() > ANNULUS * s / 2)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where undefined: no data, no flux
        for b in _bands(channels):
            img = np.ascontiguousarray(stamps[..., channels.index(b)], dtype=np.float32).reshape(n, s * s)
            data = np.isfinite(img)
            ivar = None
            if f"ivar_{b}" in channels:
                ivar = np.ascontiguousarray(stamps[..., channels.index(f"ivar_{b}")], dtype=np.float32)
                ivar = ivar.reshape(n, s * s)
                data &= ivar > 0  # NaN compares False
            img_a, ring = np.take(img, ring_idx, axis=1), np.take(data, ring_idx, axis=1)
            sorted_a, k = _masked_sort(img_a, ring)
            sky = _sorted_median(sorted_a, k)
            sky32 = np.nan_to_num(sky).astype(np.float32)[:, None]
            if ivar is not None:
                med_ivar = _masked_median(ivar, data)
                sigma = 1 / np.sqrt(np.where(med_ivar > 0, med_ivar, np.nan))
                ivar_a = np.take(ivar, ring_idx, axis=1)
                # z = (pixel - sky) sqrt(ivar); where ivar is one value over the annulus, z's order is the pixels':
                # the sky's sort serves (sorted z = (sorted pixels - sky) sqrt(ivar), its median 0)
                const, value = _row_constant(ivar_a, ring)
                zs = (sorted_a - sky32) * np.sqrt(np.where(const, value, 0)).astype(np.float32)[:, None]
                zmed = np.where(const, 0.0, np.nan)
                rest = np.flatnonzero(~const & (k > 0))
                if len(rest):
                    z = (img_a[rest] - sky32[rest]) * np.sqrt(np.where(ring[rest], ivar_a[rest], 0))
                    zs[rest], _ = _masked_sort(z, ring[rest])
                    zmed[rest] = _sorted_median(zs[rest], k[rest])
                chi = MAD_TO_SIGMA * _mad_sorted(zs, k, zmed)
            else:
                sigma = chi = np.full(n, np.nan)
            if psf_fwhm is None:
                w = WEIGHT_SIGMA
            else:
                w = float(psf_fwhm[b] if isinstance(psf_fwhm, dict) else psf_fwhm) / FWHM_PER_SIGMA
            sub = np.where(data, img - sky32, np.float32(0)).reshape(n, s, s)
            x, y, t, flux, norm = _weighted_moments(sub, w)
            snr = flux / (sigma * norm)
            low = ~(snr >= MIN_SNR) | np.isnan(sky)
            x, y, t = (np.where(low, np.nan, q) for q in (x, y, t))
            kk = np.clip(1 - t / (2 * w * w), 0, 1) ** 2
            out.update({f"sky_{b}": sky, f"sigma_{b}": sigma, f"chi_{b}": chi, f"x_{b}": x, f"y_{b}": y, f"t_{b}": t,
                        f"snr_{b}": snr, f"k_{b}": kk})
    return pd.DataFrame(out)


def _strip(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """``frame`` without ``prefix`` on its column names where every statistic carries it (the brick file's
    ``processing`` table names them ``rel_`` and ``inj_``)."""
    cols = [c for c in frame.columns if str(c).startswith(prefix)]
    if cols and not any(str(c).startswith("sky_") for c in frame.columns):
        return frame[cols].rename(columns=lambda c: c[len(prefix):])
    return frame


def _psf_columns(psfsize, n: int, bands) -> dict:
    """``psfsize`` (a table with ``psfsize_<b>`` columns, {band: values}, or values for every band) as
    {``psfsize_<b>``: array of n}; {} without it."""
    if psfsize is None:
        return {}
    out = {}
    for b in bands:
        key = f"psfsize_{b}"
        if isinstance(psfsize, pd.DataFrame):
            v = psfsize[key] if key in psfsize else None
        elif isinstance(psfsize, dict):
            v = psfsize.get(b, psfsize.get(key))
        else:
            v = psfsize
        if v is not None:
            v = np.broadcast_to(np.asarray(v, dtype=float).ravel() if np.ndim(v) else float(v), (n,))
            out[key] = np.array(v)
    return out


def compare(release: pd.DataFrame, injection: pd.DataFrame, bricks, psfsize=None) -> pd.DataFrame:
    """Per real galaxy and band, the injection run's statistics against the release's (rows aligned): ``dsky_b``
    (sky difference in the release's pixel sigma), ``depth_b`` (log ivar ratio, injection over release), ``dchi_b``
    (chi ratio - 1: noise the inverse variance misses), ``dx_b``, ``dy_b`` (centroid shift, pixels), ``dt_b``
    (weighted-moment change, pixels^2), ``k_b`` (dt / dT, sqrt(k_rel k_inj): see the module's docstring);
    ``psfsize_b`` where given (a table with ``psfsize_<b>`` columns, {band: values}, or values for every band;
    arcsec); and ``brick``. Columns may carry a ``rel_`` / ``inj_`` prefix (the brick file's ``processing`` table's)."""
    rel, inj = _strip(release, "rel_").reset_index(drop=True), _strip(injection, "inj_").reset_index(drop=True)
    if len(rel) != len(inj):
        raise ValueError(f"{len(rel)} release rows against {len(inj)} injection rows: not aligned")
    bands = [c[4:] for c in rel.columns if c.startswith("sky_") and f"sky_{c[4:]}" in inj]
    bands = _bands(bands)
    out = {"brick": np.asarray(bricks).astype(str) if len(rel) else np.array([], dtype=str)}
    if len(out["brick"]) != len(rel):
        raise ValueError(f"{len(out['brick'])} bricks for {len(rel)} rows")
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in bands:
            col = lambda f, name: f[name].to_numpy(float) if name in f else np.full(len(f), np.nan)  # noqa: E731
            sr, si = col(rel, f"sigma_{b}"), col(inj, f"sigma_{b}")
            out[f"dsky_{b}"] = (col(inj, f"sky_{b}") - col(rel, f"sky_{b}")) / sr
            out[f"depth_{b}"] = np.log(sr**2 / si**2)
            out[f"dchi_{b}"] = col(inj, f"chi_{b}") / col(rel, f"chi_{b}") - 1
            out[f"dx_{b}"] = col(inj, f"x_{b}") - col(rel, f"x_{b}")
            out[f"dy_{b}"] = col(inj, f"y_{b}") - col(rel, f"y_{b}")
            out[f"dt_{b}"] = col(inj, f"t_{b}") - col(rel, f"t_{b}")
            # dt / dT: exact for a Gaussian, (1 - t_rel / 2w^2)(1 - t_inj / 2w^2) = sqrt(k_rel k_inj)
            out[f"k_{b}"] = (np.sqrt(col(rel, f"k_{b}") * col(inj, f"k_{b}")) if f"k_{b}" in rel and f"k_{b}" in inj
                             else np.ones(len(rel)))
    out.update(_psf_columns(psfsize, len(rel), bands))
    diffs = pd.DataFrame(out)
    num = diffs.columns.drop("brick")
    diffs[num] = diffs[num].replace([np.inf, -np.inf], np.nan)
    return diffs


def compare_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`compare` on a brick file's ``processing`` table (``rel_`` and ``inj_`` statistics, ``brick``,
    ``psfsize_<b>``), concatenated over bricks."""
    psf = table[[c for c in table.columns if c.startswith("psfsize_")]]
    return compare(table.filter(regex="^rel_"), table.filter(regex="^inj_"), table["brick"],
                   psfsize=psf if psf.shape[1] else None)


def _clustered(values: np.ndarray, codes: np.ndarray) -> dict:
    """The mean of ``values`` (n, d) with its brick-cluster-robust covariance (CR1: K/(K-1) sum over bricks of the
    residual sums' outer products, / n^2) and K - 1 degrees of freedom; with one brick, the examples' covariance
    / n and n - 1 degrees of freedom (``clustered`` False)."""
    n = len(values)
    mean = values.mean(axis=0) if n else np.full(values.shape[1], np.nan)
    uniq, inv = np.unique(codes, return_inverse=True)
    k = len(uniq)
    if k >= 2:
        sums = np.zeros((k, values.shape[1]))
        np.add.at(sums, inv, values - mean)
        cov, dof, clustered = k / (k - 1) * sums.T @ sums / n**2, k - 1, True
    elif n >= 2:
        r = values - mean
        cov, dof, clustered = r.T @ r / (n - 1) / n, n - 1, False
    else:
        cov, dof, clustered = np.full((values.shape[1],) * 2, np.nan), 0, False
    return dict(mean=mean, cov=cov, dof=dof, n=n, bricks=k, clustered=clustered)


def _t_test(values, codes, alpha: float):
    """Brick-clustered mean of ``values`` with its (1 - alpha) interval and two-sided p-value (t, K - 1 dof)."""
    from scipy.special import stdtr, stdtrit  # scipy.special: a third of scipy.stats' import time

    c = _clustered(np.asarray(values, float)[:, None], codes)
    est, se, dof = float(c["mean"][0]), float(np.sqrt(c["cov"][0, 0])), c["dof"]
    if dof < 1 or not np.isfinite(se):
        return est, [np.nan, np.nan], np.nan, c
    if se == 0:
        return est, [est, est], (1.0 if est == 0 else 0.0), c
    q = stdtrit(dof, 1 - alpha / 2)
    return est, [est - q * se, est + q * se], float(2 * stdtr(dof, -abs(est) / se)), c


def _hotelling(values, codes, alpha: float):
    """Brick-clustered mean vector of ``values`` (n, 2), Hotelling's T^2 test of it against 0 (F(2, dof - 1)),
    and the (1 - alpha) interval of its length: the confidence ellipse's nearest and farthest radii bounded by
    |mean| -/+ sqrt(c lambda_max)."""
    from scipy.special import fdtrc, fdtri

    c = _clustered(np.asarray(values, float), codes)
    mu, cov, dof = c["mean"], c["cov"], c["dof"]
    length = float(np.hypot(*mu))
    if dof < 2 or not np.all(np.isfinite(cov)):
        return mu, length, [np.nan, np.nan], np.nan, c
    if not np.any(cov):
        return mu, length, [length, length], (1.0 if length == 0 else 0.0), c
    t2 = float(mu @ np.linalg.pinv(cov) @ mu)
    scale = 2 * dof / (dof - 1)
    p = float(fdtrc(2, dof - 1, t2 / scale))
    r = float(np.sqrt(scale * fdtri(2, dof - 1, 1 - alpha) * np.linalg.eigvalsh(cov).max()))
    return mu, length, [max(0.0, length - r), length + r], p, c


def _holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, NaN kept (realfake.evaluation.stats.holm's, here without its scipy.stats import)."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    out[order] = np.minimum(np.maximum.accumulate((len(order) - np.arange(len(order))) * p[order]), 1.0)
    return out


def _entry(quantity, band, estimate, ci, p, tol, c, null, units, **extra) -> dict:
    """One check's record (plain floats)."""
    return dict(quantity=quantity, band=band, estimate=float(estimate), ci95=[float(ci[0]), float(ci[1])],
                p_value=float(p), tolerance=float(tol), null=null, units=units, n=int(c["n"]),
                bricks=int(c["bricks"]), clustered=bool(c["clustered"]), **extra)


def _reason(e: dict) -> str:
    """One plain sentence for a differing check."""
    est, (lo, hi), b = e["estimate"], e["ci95"], e["band"]
    q = e["quantity"]
    if q == "sky_offset":
        side = "above" if est > 0 else "below"
        return (f"the injection run's {b}-band sky is {abs(est):.3f} sigma {side} the release's "
                f"({lo:.3f} to {hi:.3f})")
    if q == "depth":
        return (f"the injection run's {b}-band inverse variance is {est:.3f} times the release's "
                f"({lo:.3f}-{hi:.3f}): another depth")
    if q == "noise":
        side = "more" if est > 0 else "less"
        return (f"the injection run's {b}-band pixel noise is {abs(est):.0%} {side}, against its own inverse variance, "
                f"than the release's ({lo:+.0%} to {hi:+.0%}): noise its inverse variance does not record")
    if q == "psf":
        side = "wider" if est > 1 else "narrower"
        return (f"the injection run's {b}-band PSF is {abs(est - 1):.0%} {side} than the release's "
                f"(FWHM ratio {est:.3f}, {lo:.3f}-{hi:.3f})")
    return (f"the injection run's {b}-band astrometry is offset by {est:.3f} arcsec from the release's "
            f"({lo:.3f}-{hi:.3f}; x {round(e['dx_arcsec'], 3) + 0:+.3f}, y {round(e['dy_arcsec'], 3) + 0:+.3f} "
            "arcsec along the coadd's axes)")


def summarise(diffs: pd.DataFrame, tolerances: dict | None = None, alpha: float = 0.05, pixscale: float = PIXSCALE,
              psfsize=None) -> dict:
    """Per band, whether the injection run's coadds differ from the release's beyond ``tolerances``: sky offset
    (release sigma), depth (ivar ratio), noise (fractional chi change), PSF (FWHM ratio, from the catalogue's
    ``psfsize`` in arcsec: an argument, or ``psfsize_<b>`` columns of ``diffs``; without it the mean dt only, not
    judged) and astrometry (offset length, arcsec). Means over examples with brick-clustered 95% intervals and
    p-values (t or Hotelling over bricks; over examples with one brick, ``clustered`` False), Holm-corrected over
    every check; a check ``differs`` where Holm p < alpha and its estimate departs from no difference by more than
    its tolerance."""
    tol = dict(TOLERANCES, **(tolerances or {}))
    base = dict(alpha=alpha, pixscale=pixscale, tolerances=tol)
    if diffs is None or len(diffs) == 0:
        return dict(n=0, bricks=0, clustered=False, differs=False, checks=[], reasons=[],
                    note="no real galaxy compared: no stamps cut from both the release's and the injection run's "
                         "coadds", **base)
    bricks = diffs["brick"].astype(str).to_numpy()
    bands = _bands([c[5:] for c in diffs.columns if c.startswith("dsky_")])
    psf_cols = _psf_columns(psfsize, len(diffs), bands) if psfsize is not None else {
        c: diffs[c].to_numpy(float) for c in diffs.columns if c.startswith("psfsize_")}
    checks = []
    for b in bands:
        def take(*names):
            v = np.column_stack([diffs[f"{nm}_{b}"].to_numpy(float) for nm in names])
            ok = np.isfinite(v).all(axis=1)
            return v[ok], bricks[ok]

        v, g = take("dsky")
        est, ci, p, c = _t_test(v[:, 0], g, alpha)
        checks.append(_entry("sky_offset", b, est, ci, p, tol["sky_offset"], c, 0.0, "release's pixel sigma"))
        v, g = take("depth")
        est, ci, p, c = _t_test(v[:, 0], g, alpha)
        checks.append(_entry("depth", b, np.exp(est), np.exp(ci), p, tol["depth"], c, 1.0,
                             "inverse-variance ratio, injection / release"))
        v, g = take("dchi")
        est, ci, p, c = _t_test(v[:, 0], g, alpha)
        checks.append(_entry("noise", b, est, ci, p, tol["noise"], c, 0.0, "fractional chi change"))
        v, g = take("dt", "k") if f"k_{b}" in diffs else take("dt", "dt")
        est, ci, p, c = _t_test(v[:, 0], g, alpha)
        fwhm = psf_cols.get(f"psfsize_{b}")
        fwhm = np.nanmedian(fwhm) if fwhm is not None and np.isfinite(fwhm).any() else np.nan
        if np.isfinite(fwhm) and fwhm > 0:
            t_psf = 2 * (fwhm / pixscale / FWHM_PER_SIGMA) ** 2
            k_mean = float(v[:, 1].mean()) if f"k_{b}" in diffs and len(v) else 1.0
            ratio = lambda d: np.sqrt(np.maximum(1 + d / k_mean / t_psf, 0))  # noqa: E731
            checks.append(_entry("psf", b, ratio(est), ratio(np.asarray(ci)), p, tol["psf"], c, 1.0,
                                 "FWHM ratio, injection / release", T_psf=float(t_psf), k_mean=k_mean,
                                 mean_dt=float(est)))
        else:
            checks.append(_entry("psf", b, est, ci, p, np.nan, c, 0.0, "mean weighted-moment change, pixels^2",
                                 note="no catalogue psfsize: the mean dt only, not judged against a tolerance"))
        v, g = take("dx", "dy")
        mu, length, ci, p, c = _hotelling(v, g, alpha)
        checks.append(_entry("astrometry", b, length * pixscale, np.asarray(ci) * pixscale, p, tol["astrometry"], c,
                             0.0, "arcsec", dx_arcsec=float(mu[0] * pixscale), dy_arcsec=float(mu[1] * pixscale)))
    p_holm = _holm([e["p_value"] for e in checks])
    reasons = []
    for e, ph in zip(checks, p_holm):
        e["p_holm"] = float(ph)
        judged = np.isfinite(e["tolerance"]) and np.isfinite(ph)
        e["differs"] = bool(judged and ph < alpha and abs(e["estimate"] - e["null"]) > e["tolerance"])
        if e["differs"]:
            reasons.append(_reason(e))
    k = len(np.unique(bricks))
    return dict(n=int(len(diffs)), bricks=int(k), clustered=bool(k >= 2), differs=bool(reasons), checks=checks,
                reasons=reasons, **base)


def check_bricks(paths, tolerances: dict | None = None, alpha: float = 0.05,
                 pixscale: float = PIXSCALE) -> tuple[dict, pd.DataFrame]:
    """The processing check over brick files (realfake.cutouts.brickfile): their ``processing`` tables compared
    (:func:`compare_table`) and summarised (:func:`summarise`); the summary also lists the bricks whose reals were
    cut from the release's coadds because no injection run kept its own (``reals_from_release``: attribute
    ``reals_fallback``), where the rerun's processing can enter the answer. Returns (summary, diffs)."""
    import h5py

    from realfake.cutouts.brickfile import read_table

    tables, fallback = [], []
    for path in paths:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()
                     if k in ("brick", "reals_fallback")}
            has = "processing" in f and len(f["processing"])
        if attrs.get("reals_fallback"):
            fallback.append(str(attrs.get("brick") or Path(path).stem))
        if has:
            tables.append(read_table(path, "processing"))
    diffs = compare_table(pd.concat(tables, ignore_index=True)) if tables else pd.DataFrame(columns=["brick"])
    summary = summarise(diffs, tolerances, alpha=alpha, pixscale=pixscale)
    summary["reals_from_release"] = sorted(fallback)
    return summary, diffs


PANELS = {"sky_offset": "sky offset (release sigma)", "depth": "depth: ivar ratio inj / rel",
          "noise": "noise: chi ratio - 1", "psf": "PSF: FWHM ratio inj / rel",
          "astrometry": "astrometry: offset (arcsec)"}


def _brick_values(quantity: str, band: str, entry: dict, diffs: pd.DataFrame):
    """The per-brick means of a check's quantity on its scale (None where not drawn)."""
    col = {"sky_offset": "dsky", "depth": "depth", "noise": "dchi", "psf": "dt"}.get(quantity)
    if col is None or f"{col}_{band}" not in diffs:
        return None
    m = diffs.groupby(diffs["brick"].astype(str))[f"{col}_{band}"].mean().dropna().to_numpy()
    if quantity == "depth":
        return np.exp(m)
    if quantity == "psf" and "T_psf" in entry:
        return np.sqrt(np.maximum(1 + m / entry["k_mean"] / entry["T_psf"], 0))
    return m


def processing_figure(summary: dict, diffs: pd.DataFrame, out_png) -> None:
    """One figure of the processing check: per quantity a panel, per band the estimate with its 95% interval (red
    where it differs), the per-brick means in grey, the tolerance shaded around no difference; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realfake.figures import save

    fig, axes = plt.subplots(1, 5, figsize=(18, 4.6))
    checks = summary.get("checks", [])
    bands = _bands(sorted({e["band"] for e in checks})) or list(BANDS_ORDER)
    rng = np.random.default_rng(0)
    for ax, q in zip(axes, QUANTITIES):
        entries = {e["band"]: e for e in checks if e["quantity"] == q}
        any_e = next(iter(entries.values()), None)
        null = any_e["null"] if any_e else (1.0 if q in ("depth", "psf") else 0.0)
        tol = any_e["tolerance"] if any_e else summary.get("tolerances", TOLERANCES).get(q, np.nan)
        title = PANELS[q]
        if any_e and q == "psf" and "T_psf" not in any_e:
            title = "PSF: mean weighted-moment change\n(px$^2$; no psfsize: not judged)"
        if np.isfinite(tol):
            lo = 0.0 if q == "astrometry" else null - tol
            ax.axhspan(lo, null + tol, color="tab:green", alpha=0.18, lw=0, label="tolerance")
        ax.axhline(null, color="k", lw=0.8)
        for i, b in enumerate(bands):
            e = entries.get(b)
            if e is None:
                continue
            if diffs is not None and len(diffs):
                bv = _brick_values(q, b, e, diffs)
                if bv is not None and len(bv):
                    ax.scatter(i + rng.uniform(-0.18, 0.18, len(bv)), bv, s=7, color="0.6", zorder=1,
                               label="per-brick means" if i == 0 else None)
            colour = "tab:red" if e["differs"] else "k"
            lo, hi = e["ci95"]
            yerr = [[max(e["estimate"] - lo, 0)], [max(hi - e["estimate"], 0)]] if np.isfinite([lo, hi]).all() else None
            ax.errorbar([i], [e["estimate"]], yerr=yerr, fmt="o", color=colour, ms=7, capsize=5, lw=2, zorder=3,
                        label=("differs" if e["differs"] else "within tolerance / not significant"))
        if not any(np.isfinite(e["estimate"]) for e in entries.values()):
            ax.text(0.5, 0.5, f"no measurement\n(no pair with S/N >= {MIN_SNR:g})" if q in ("psf", "astrometry")
                    else "no measurement", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xticks(range(len(bands)), [f"{b} band" for b in bands])
        ax.set_xlim(-0.6, len(bands) - 0.4)
        ax.set_title(title, fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower right", ncol=len(handles), fontsize=9,
               frameon=False)
    n, k = summary.get("n", 0), summary.get("bricks", 0)
    verdict = "DIFFER beyond the tolerances" if summary.get("differs") else "no difference beyond the tolerances"
    clustered = ("brick-clustered" if summary.get("clustered") else
                 "not clustered (one brick)" if n else "none")
    fig.suptitle("processing: release coadds against the injection run's coadds, same real galaxies\n"
                 f"{n} real galaxies in {k} bricks; 95% intervals {clustered}, Holm-corrected tests: {verdict}",
                 fontsize=12)
    reasons = summary.get("reasons") or [summary.get("note", "")]
    text = "\n".join(reasons[:6]) + (f"\n... and {len(reasons) - 6} more" if len(reasons) > 6 else "")
    fig.text(0.01, 0.01, text, fontsize=8.5, va="bottom", ha="left", color="tab:red" if summary.get("differs") else "k")
    bottom = 0.1 + 0.028 * min(len(reasons), 7)
    fig.tight_layout(rect=(0, bottom, 1, 0.93))
    save(fig, out_png, dpi=120)
