"""Impute stage: blocked CV without leakage, map scores, data-driven smoothing, layers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spatialfuse.constants import Key

from conftest import drawn_collections, polygon_shapes

REPO = Path(__file__).resolve().parents[1]


def _hex_grid(n_side: int = 20, pitch: float = 100.0) -> np.ndarray:
    pts = [((c + 0.5 * (r % 2)) * pitch, r * pitch * np.sqrt(3) / 2)
           for r in range(n_side) for c in range(n_side)]
    return np.asarray(pts)


def _field(xy: np.ndarray, wavelength: float, phase: float) -> np.ndarray:
    return np.sin(xy[:, 0] / wavelength + phase) + np.cos(xy[:, 1] / wavelength - phase)


def test_training_masks_hold_out_blocks_with_a_buffer():
    from spatialfuse.impute import auto_buffer_um, spatial_blocks, training_masks

    xy = _hex_grid()
    folds = spatial_blocks(xy, 4, seed=0)
    buf = auto_buffer_um(xy)
    assert 150 < buf < 250  # two hops of the 6-NN graph on a 100 um lattice
    masks = training_masks(xy, folds, buf)
    assert sorted(masks) == [0, 1, 2, 3]
    from scipy.spatial import cKDTree

    for f, train in masks.items():
        test = folds == f
        assert not (train & test).any()
        d, _ = cKDTree(xy[test]).query(xy[train])
        assert d.min() >= buf  # no training spot inside the buffer
        assert train.sum() > 0.4 * len(xy)
    no_buf = training_masks(xy, folds, 0.0)
    assert all((no_buf[f] == (folds != f)).all() for f in no_buf)


def test_ssim_scores_structure():
    from spatialfuse.impute import feature_scores, masked_ssim

    xy = _hex_grid()
    smooth = _field(xy, 300.0, 0.3)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(smooth)
    M = np.c_[smooth, smooth, smooth]
    P = np.c_[3 * smooth + 2, shuffled, smooth + rng.normal(0, 0.5, len(xy))]
    sc = feature_scores(P, M, xy)
    # an affine copy is the same image; a shuffled map is not; noise lowers SSIM
    assert sc["ssim"][0] == pytest.approx(1.0, abs=1e-6)
    assert sc["pearson_r"][0] == pytest.approx(1.0)
    assert sc["ssim"][1] < 0.2 and sc["ssim"][2] < sc["ssim"][0]
    assert sc["ssim"][2] > sc["ssim"][1]
    img = np.ones((5, 5))
    assert np.isnan(masked_ssim(img, img, img > 0))  # a constant map has no structure


def test_graph_smoothing_strength_follows_the_noise():
    from spatialfuse.impute import choose_strength, graph_smooth
    from spatialfuse.impute.smooth import heldout_spot_folds
    from spatialfuse.metrics import columnwise_corr

    xy = _hex_grid()
    rng = np.random.default_rng(1)
    truth = np.c_[_field(xy, 400.0, 0.0), _field(xy, 400.0, 1.0)]
    X = truth + np.c_[rng.normal(0, 0.1, len(xy)), rng.normal(0, 1.5, len(xy))]
    ch = choose_strength(X, xy, heldout_spot_folds(len(xy), 5, seed=0))
    assert ch["strength"][1] > ch["strength"][0]  # the noisy feature is smoothed harder
    Y = graph_smooth(X, xy, ch["strength"])
    err_raw = ((X - truth) ** 2).mean(0)
    err_smooth = ((Y - truth) ** 2).mean(0)
    assert err_smooth[1] < 0.5 * err_raw[1]
    # held-out predictions track the truth of spots they never saw
    assert (columnwise_corr(ch["heldout"], truth) > 0.7).all()
    np.testing.assert_array_equal(graph_smooth(X, xy, 0.0), X)
    # on the same hidden spots, the chosen strength beats a plain neighbour mean where noise is high
    from spatialfuse.impute.smooth import heldout_neighbour_prediction

    nb = heldout_neighbour_prediction(X, xy, heldout_spot_folds(len(xy), 5, seed=0))
    assert ((ch["heldout"] - truth) ** 2).mean(0)[1] < ((nb - truth) ** 2).mean(0)[1]


def test_scores_and_smoothing_are_the_same_feature_by_feature(monkeypatch):
    """Scores and graph smoothing run over a few hundred columns at a time (their memory at
    Visium HD sizes); every number must be what the whole matrix at once gives, and a
    column's result must not depend on its neighbours in the matrix."""
    from spatialfuse.impute import choose_strength, feature_scores, graph_smooth
    from spatialfuse.impute import scores as scores_mod
    from spatialfuse.impute import smooth as smooth_mod
    from spatialfuse.impute.smooth import heldout_spot_folds

    xy = _hex_grid()
    rng = np.random.default_rng(3)
    F = np.c_[[_field(xy, w, ph) for w, ph in ((250, 0.0), (400, 1.0), (600, 2.0))]].T
    M = F @ rng.normal(0, 1, (3, 7)) + rng.normal(0, 0.5, (len(xy), 7))
    P = M + rng.normal(0, 0.7, M.shape)
    blocks = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
    folds = heldout_spot_folds(len(xy), 5, seed=0)
    whole = feature_scores(P, M, xy, blocks=blocks)
    moran = scores_mod.morans_i(M, xy)
    ch = choose_strength(M, xy, folds)
    sm = graph_smooth(M, xy, ch["strength"])
    monkeypatch.setattr(scores_mod, "SCORE_CHUNK", 2)
    monkeypatch.setattr(smooth_mod, "SOLVE_CHUNK", 3)
    pd.testing.assert_frame_equal(feature_scores(P, M, xy, blocks=blocks), whole)
    np.testing.assert_allclose(scores_mod.morans_i(M, xy), moran, rtol=0, atol=1e-12)
    ch2 = choose_strength(M, xy, folds)
    np.testing.assert_array_equal(ch2["strength"], ch["strength"])
    np.testing.assert_allclose(ch2["heldout"], ch["heldout"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(graph_smooth(M, xy, ch["strength"]), sm, rtol=0, atol=1e-12)
    # one column alone gets the scores it got among the others
    one = feature_scores(P[:, [4]], M[:, [4]], xy, blocks=blocks)
    pd.testing.assert_frame_equal(one, whole.iloc[[4]].reset_index(drop=True))
    assert len(whole) == 7 and whole["pearson_r"].between(0.3, 1).all()


def _paired_synthetic(seed: int = 0, n_side: int = 14):
    import anndata as ad
    import pandas as pd

    xy = _hex_grid(n_side)
    rng = np.random.default_rng(seed)
    fields = np.c_[[_field(xy, w, ph) for w, ph in ((250, 0.0), (400, 1.0), (600, 2.0))]].T
    G = rng.normal(0, 1, (3, 40))
    Mw = rng.normal(0, 1, (3, 12))
    mu = np.exp(1.0 + 0.5 * fields @ G / 3)
    counts = rng.poisson(mu).astype(np.float32)
    lib = counts.sum(1, keepdims=True)
    bc = [f"s{i}" for i in range(len(xy))]
    obs = pd.DataFrame(index=bc)
    rna = ad.AnnData(np.log1p(counts / lib * lib.mean()).astype(np.float32), obs=obs,
                     var=pd.DataFrame(index=[f"g{i}" for i in range(40)]))
    rna.layers[Key.layers.counts] = counts
    rna.var[Key.var.highly_variable] = True
    rna.obsm[Key.obsm.spatial] = xy
    M = fields @ Mw / 3 + rng.normal(0, 0.3, (len(xy), 12)) + 3
    msi = ad.AnnData(M.astype(np.float32), obs=obs,
                     var=pd.DataFrame(index=[f"mz{i}" for i in range(12)]))
    msi.obsm[Key.obsm.spatial] = xy
    return rna, msi


@pytest.mark.parametrize("method", ["ridge", "knn"])
def test_baselines_never_read_heldout_targets(method):
    from spatialfuse.impute import baseline_fold

    rng = np.random.default_rng(0)
    S, Y = rng.normal(size=(120, 8)), rng.normal(size=(120, 5))
    test = np.zeros(120, bool)
    test[:30] = True
    a = baseline_fold(method, S, Y, ~test, test, n_comps=4)
    Y2 = Y.copy()
    Y2[test] = 1e3  # any values at held-out spots
    np.testing.assert_array_equal(a, baseline_fold(method, S, Y2, ~test, test, n_comps=4))


# the fold-fit options (depth head, cross-reconstruction, linear path) change what a fit reads
# and predicts with: none of them may let a held-out target in
FOLD_FIT_OPTIONS = [{}, {"depth_head": True, "cross_weight": 1.0, "linear_path": True}]


@pytest.mark.parametrize("transductive", [False, True], ids=["inductive", "transductive"])
@pytest.mark.parametrize("extra", FOLD_FIT_OPTIONS, ids=["plain", "fold_fit_options"])
def test_model_fold_never_reads_heldout_targets(extra, transductive):
    from spatialfuse.impute import model_fold

    rna, msi = _paired_synthetic()
    test = np.zeros(rna.n_obs, bool)
    test[:40] = True
    train = ~test
    train[40:60] = False  # a buffer: neither held out nor trained on (its source is, if transductive)
    out = ~train  # held-out block and buffer: their target values must never matter
    params = {"max_steps": 20, "hidden_dim": 16, "latent_dim": 4, "input_pcs": 4, **extra}
    kw = dict(seed=0, device="cpu", transductive=transductive)
    a, genes, _ = model_fold("gnn", rna, msi, train, test, params, **kw)
    msi2, rna2 = msi.copy(), rna.copy()
    msi2.X[out] = 50.0
    b, _, _ = model_fold("gnn", rna, msi2, train, test, params, **kw)
    np.testing.assert_allclose(a["msi"], b["msi"], rtol=1e-5, atol=1e-5)
    rna2.X[out] = 0.0
    rna2.layers[Key.layers.counts][out] = 0.0
    c, _, _ = model_fold("gnn", rna2, msi, train, test, params, **kw)
    np.testing.assert_allclose(a["rna"], c["rna"], rtol=1e-5, atol=1e-5)
    assert a["msi"].shape == (40, 12) and len(genes) == 40
    # the source-only latents of the ridge-on-embedding hybrids: no held-out target enters
    np.testing.assert_allclose(a["z_from_rna"], b["z_from_rna"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a["z_from_msi"], c["z_from_msi"], rtol=1e-5, atol=1e-5)
    assert a["z_from_rna"].shape == (rna.n_obs, 4)


def test_seed_ensemble_averages_one_fit_per_model_seed():
    """impute.model_seeds: each fold's model is fitted once per seed (seed, seed + 1, ...) and
    the decoder's and the hybrid's predictions are the mean of those fits'; one seed is the
    plain run, bit for bit; the baselines do not change."""
    from spatialfuse.impute.crossmodal import crossmodal_cv, model_fold, model_fold_jobs
    from spatialfuse.impute.cv import spatial_blocks, training_masks
    from spatialfuse.impute.smooth import knn_smooth

    rna, msi = _paired_synthetic()
    xy = rna.obsm[Key.obsm.spatial]
    folds = spatial_blocks(xy, 3, 0)
    masks = training_masks(xy, folds, 0.0)
    Xr, Xm = np.asarray(rna.X, float), np.asarray(msi.X, float)
    params = {"vae": {"max_steps": 10, "hidden_dim": 16, "latent_dim": 4, "input_pcs": 4}}

    def run(seed, n):
        return crossmodal_cv(Xr, Xm, knn_smooth(Xr, xy), knn_smooth(Xm, xy), folds, masks,
                             models=("vae",), model_params=params, rna_ad=rna, msi_ad=msi,
                             n_comps=5, seed=seed, model_seeds=n)[0]

    jobs = model_fold_jobs(("vae",), params, folds, masks, seed=4, n_seeds=2)
    assert [j["seed"] for j in jobs] == [4, 5] * 3  # fold by fold, one fit per seed
    one, other, both = run(0, 1), run(1, 1), run(0, 2)
    plain = crossmodal_cv(Xr, Xm, knn_smooth(Xr, xy), knn_smooth(Xm, xy), folds, masks,
                          models=("vae",), model_params=params, rna_ad=rna, msi_ad=msi,
                          n_comps=5, seed=0)[0]
    for method in ("vae", "vae_ridge", "ridge"):
        for tgt in ("msi", "rna"):
            np.testing.assert_array_equal(plain[method][tgt], one[method][tgt])
            mean = (one[method][tgt].astype(float) + other[method][tgt].astype(float)) / 2
            np.testing.assert_allclose(both[method][tgt], mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one["vae"]["msi"], other["vae"]["msi"])  # the seeds do differ
    f = next(iter(masks))  # and one seed's prediction is that seed's fold fit itself
    fit1 = model_fold("vae", rna, msi, masks[f], folds == f, params["vae"], seed=1)[0]
    np.testing.assert_allclose(other["vae"]["msi"][folds == f], fit1["msi"], rtol=1e-6)
    np.testing.assert_array_equal(both["ridge"]["msi"], one["ridge"]["msi"])


def test_ridge_on_embedding_never_reads_heldout_targets():
    from spatialfuse.impute.crossmodal import ridge_on_embedding
    from spatialfuse.metrics import columnwise_corr

    rng = np.random.default_rng(1)
    Z, Y, pcs = rng.normal(size=(100, 4)), rng.normal(size=(100, 3)), rng.normal(size=(100, 5))
    test = np.zeros(100, bool)
    test[60:] = True
    a = ridge_on_embedding(Z, Y, ~test, test, pcs)
    Y2 = Y.copy()
    Y2[test] = -1e3
    np.testing.assert_array_equal(a, ridge_on_embedding(Z, Y2, ~test, test, pcs))
    # a target that is a linear function of the latent is predicted at held-out spots
    Y3 = Z @ rng.normal(size=(4, 3))
    assert np.min(columnwise_corr(ridge_on_embedding(Z, Y3, ~test, test), Y3[test])) > 0.95


def test_column_ranks_equal_scipys_average_ranks(monkeypatch):
    """The Spearman scores' ranks are scipy's rankdata (average ties, NaN columns NaN) to the
    bit: counts full of ties, continuous values, a constant column, a NaN, any block size."""
    from scipy import stats

    from spatialfuse import metrics

    rng = np.random.default_rng(5)
    a = rng.poisson(0.6, (300, 9)).astype(float)  # mostly zeros: long runs of ties
    a[:, 1] = rng.normal(size=300)
    a[:, 2] = 4.0
    a[7, 3] = np.nan
    a[:, 4] = np.round(rng.normal(size=300), 1)
    want = stats.rankdata(a, axis=0)
    for block in (metrics.RANK_BLOCK, 300 * 4, 300, 1):
        monkeypatch.setattr(metrics, "RANK_BLOCK", block)
        np.testing.assert_array_equal(metrics.column_ranks(a), want)
    for shape in ((1, 3), (0, 2), (4, 0)):
        b = rng.normal(size=shape)
        np.testing.assert_array_equal(metrics.column_ranks(b), stats.rankdata(b, axis=0))
    sp_r = [stats.spearmanr(a[:, j], a[:, 0]).statistic for j in (1, 4)]
    np.testing.assert_allclose(metrics.columnwise_corr(a[:, [1, 4]], a[:, [0, 0]], "spearman"),
                               sp_r, rtol=1e-12)


def test_ridge_cv_matches_leave_one_out_ridge():
    """The one-penalty ridge of the baselines and hybrids: the penalty RidgeCV would choose and
    its predictions, from a leave-one-out error summed over targets without forming each
    penalty's residuals (checked against explicit leave-one-out refits too)."""
    from sklearn.linear_model import Ridge, RidgeCV

    from spatialfuse.impute.crossmodal import RIDGE_ALPHAS, ridge_cv_predict

    rng = np.random.default_rng(3)
    for n, p, t, noise in [(60, 5, 3, 1.0), (30, 40, 7, 0.5), (200, 12, 150, 3.0),
                           (80, 6, 1, 0.05)]:
        X = rng.normal(size=(n, p)) * rng.uniform(0.1, 10, p)
        X[:, 0] = 2.0  # a constant input: no variance, no effect
        Y = X @ rng.normal(size=(p, t)) + noise * rng.normal(size=(n, t)) + 5
        Xn = rng.normal(size=(9, p))
        got = ridge_cv_predict(X, Y, Xn)
        ref = RidgeCV(alphas=RIDGE_ALPHAS).fit(X, Y).predict(Xn).reshape(got.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
        assert ridge_cv_predict(X, Y[:, 0], Xn).shape == (9,)
        # one candidate (a configured impute.ridge_alpha) is plain ridge with that penalty
        fixed = Ridge(alpha=3.0).fit(X, Y).predict(Xn).reshape(got.shape)
        np.testing.assert_allclose(ridge_cv_predict(X, Y, Xn, (3.0,)), fixed, rtol=1e-9,
                                   atol=1e-9 * np.abs(fixed).max())
    # the chosen penalty minimises the explicit leave-one-out error (last data set)
    loo = []
    for a in RIDGE_ALPHAS:
        e = 0.0
        for i in range(n):
            keep = np.arange(n) != i
            e += float(((Ridge(alpha=a).fit(X[keep], Y[keep]).predict(X[i:i + 1]) - Y[i]) ** 2).sum())
        loo.append(e)
    best = Ridge(alpha=RIDGE_ALPHAS[int(np.argmin(loo))]).fit(X, Y).predict(Xn).reshape(9, -1)
    np.testing.assert_allclose(ridge_cv_predict(X, Y, Xn), best, rtol=1e-8)


def test_location_reference_reads_training_targets_only_and_extrapolates_smooth_fields():
    """The location-only reference of the blocked CV predicts each held-out block from its
    fold's training spots by position alone: changing the targets of the held-out block and
    of the buffer changes nothing, changing a training spot's target does; a field smoother
    than the blocks is extrapolated into them (which is why it is scored), white noise is not."""
    from spatialfuse.impute.cv import location_cv, spatial_blocks, training_masks
    from spatialfuse.impute.scores import feature_scores

    xy = _hex_grid(20)
    rng = np.random.default_rng(1)
    Y = np.c_[_field(xy, 3000, 0.3), _field(xy, 2500, 1.7), rng.normal(size=(len(xy), 2))]
    folds = spatial_blocks(xy, 4, seed=0)
    masks = training_masks(xy, folds, 200.0)
    P = location_cv(Y, xy, folds, masks)
    assert P.dtype == np.float32 and np.isfinite(P).all()  # every spot is held out once
    Y2 = Y.copy()
    f0 = int(folds[0])
    not_train = ~masks[f0]
    Y2[not_train] = 1e3  # the held-out block and its buffer, any values
    P2 = location_cv(Y2, xy, folds, {f0: masks[f0]})
    np.testing.assert_array_equal(P2[folds == f0], P[folds == f0])
    Y3 = Y.copy()
    Y3[masks[f0]] += 5.0  # every training spot of the fold
    assert not np.allclose(location_cv(Y3, xy, folds, {f0: masks[f0]})[folds == f0],
                           P[folds == f0])
    r = feature_scores(P.astype(float), Y, xy, blocks=folds)["pearson_r_block"].to_numpy()
    assert r[:2].min() > 0.5 and np.abs(r[2:]).max() < 0.3


def test_kriging_subset_keeps_the_points_next_to_the_target_and_spans_the_rest():
    """Beyond max_train source points kriging is fitted on the half nearest to the points it
    predicts and a seeded random half of the rest: every source point up to the cap, the
    nearest ones always, far ones from all over, the same draw for the same seed."""
    from scipy.spatial import cKDTree

    from spatialfuse.impute.cv import krige_subset

    xy = _hex_grid(30)
    to = xy[:, 0] > np.quantile(xy[:, 0], 0.8)  # a strip on one side is predicted
    src = xy[~to]
    np.testing.assert_array_equal(krige_subset(src, xy[to], len(src)), np.arange(len(src)))
    idx = krige_subset(src, xy[to], 200, seed=4)
    assert len(idx) == 200 == len(np.unique(idx)) and np.all(np.diff(idx) > 0)
    d = cKDTree(xy[to]).query(src)[0]
    nearest = np.argsort(d, kind="stable")[:100]
    assert set(nearest) <= set(idx)
    far = np.setdiff1d(idx, nearest)
    assert d[far].max() > 0.8 * d.max()  # the random half reaches the far side
    np.testing.assert_array_equal(idx, krige_subset(src, xy[to], 200, seed=4))
    assert not np.array_equal(idx, krige_subset(src, xy[to], 200, seed=5))


def test_kriging_reference_fits_each_feature_reads_training_targets_only():
    """The second location reference krige_cv: a covariance fitted per feature (a smooth field
    gets a long range, a short-range one a short range), training targets only (held-out and
    buffer values change nothing), every spot held out once, and where a field varies on the
    scale of a block it reads the inside of the block better than the nearest spots do."""
    from spatialfuse.impute.cv import krige, krige_cv, location_cv, spatial_blocks, training_masks
    from spatialfuse.impute.scores import feature_scores

    xy = _hex_grid(24)
    rng = np.random.default_rng(3)
    wide = _field(xy, 3000, 0.3) + 0.05 * rng.normal(size=len(xy))
    shorter = _field(xy, 500, 1.1) + _field(xy, 400, 2.3) + 0.1 * rng.normal(size=len(xy))
    Y = np.c_[wide, shorter, rng.normal(size=len(xy))]
    (_, ranges), = krige(xy, [Y], xy[:3], 100.0)
    assert ranges[0] > ranges[1]  # the smooth field's covariance reaches further
    folds = spatial_blocks(xy, 4, seed=0)
    masks = training_masks(xy, folds, 200.0)
    P, = krige_cv([Y], xy, folds, masks, 100.0, seed=0)
    assert P.dtype == np.float32 and np.isfinite(P).all()
    f0 = int(folds[0])
    Y2 = Y.copy()
    Y2[~masks[f0]] = 1e3  # the held-out block and its buffer, any values
    np.testing.assert_array_equal(krige_cv([Y2], xy, folds, {f0: masks[f0]}, 100.0)[0][folds == f0],
                                  P[folds == f0])
    # a subset of the training spots beyond max_train, the same for the same seed
    a, = krige_cv([Y], xy, folds, masks, 100.0, seed=1, max_train=60)
    b, = krige_cv([Y], xy, folds, masks, 100.0, seed=1, max_train=60)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, P)
    rk = feature_scores(P.astype(float), Y, xy, blocks=folds)["pearson_r_block"].to_numpy()
    ri = feature_scores(location_cv(Y, xy, folds, masks).astype(float), Y, xy,
                        blocks=folds)["pearson_r_block"].to_numpy()
    assert rk[0] > 0.5 and rk[1] > ri[1] + 0.05 and abs(rk[2]) < 0.3


def test_heldout_entries_hide_each_entry_once_and_recover_smooth_maps():
    from spatialfuse.impute.smooth import heldout_entry_folds, heldout_entry_predictions
    from spatialfuse.metrics import columnwise_corr

    xy = _hex_grid()
    rng = np.random.default_rng(2)
    truth = np.c_[_field(xy, 400.0, 0.0), _field(xy, 400.0, 1.0), _field(xy, 500.0, 2.0)]
    X = truth + rng.normal(0, 0.3, truth.shape)
    groups, folds = heldout_entry_folds(len(xy), X.shape[1], n_folds=4, n_groups=2, seed=0)
    assert set(groups) == {0, 1} and folds.shape == (2, len(xy))
    assert not np.array_equal(folds[0], folds[1])  # groups hide different spots
    P = heldout_entry_predictions(X, xy, groups, folds)
    # knn: an entry's prediction never reads the entry itself
    X2 = X.copy()
    i, j = 7, 1
    X2[i, j] = 1e3
    P2 = heldout_entry_predictions(X2, xy, groups, folds)
    assert P2["knn_smooth"][i, j] == P["knn_smooth"][i, j]
    for m in ("knn_smooth", "graph_smooth"):
        assert (columnwise_corr(P[m], truth) > 0.6).all(), m


def test_run_impute_layers_scores_and_no_overwrite():
    from spatialfuse.impute import run_impute
    from spatialfuse.impute.stage import scored_genes

    rna, msi = _paired_synthetic()
    rna.var[Key.var.highly_variable] = np.arange(rna.n_vars) >= 10  # 30 of 40 genes scored
    X0r, X0m = rna.X.copy(), msi.X.copy()
    params = {"n_blocks": 3, "models": ["vae"], "model_min_epochs": 0, "model_max_steps": 30, "denoise_folds": 3,
              "denoise_models": ["vae"]}
    mp = {"vae": {"hidden_dim": 16, "latent_dim": 4, "input_pcs": 4}}
    r2, m2, metrics, table = run_impute(rna, msi, params, seed=0, model_params=mp, device="cpu")
    np.testing.assert_array_equal(rna.X, X0r)  # inputs untouched
    np.testing.assert_array_equal(m2.X, X0m)
    # the RNA returned holds the scored genes, measured values as given, and every layer is a
    # prediction for each of them (no NaN padding to the unscored genes)
    genes = scored_genes(rna)
    assert list(r2.var_names) == list(rna.var_names[genes]) and r2.n_vars == 30
    assert metrics["n_genes_scored"] == 30
    np.testing.assert_array_equal(r2.X, X0r[:, genes])
    for key, layer in r2.layers.items():
        assert layer.shape == r2.shape and (key == "counts" or np.isfinite(layer).all()), key
    assert set(table.loc[table["modality"] == "rna", "feature"]) == set(r2.var_names)
    for meth in ("knn_smooth", "graph_smooth", "ridge_from_rna", "knn_from_rna", "vae_from_rna"):
        assert Key.layers.imputed(meth) in m2.layers
    for meth in ("ridge_from_msi", "knn_from_msi", "vae_from_msi", "graph_smooth",
                 "vae_reconstruction"):
        assert Key.layers.imputed(meth) in r2.layers
    assert Key.layers.imputed("vae_reconstruction") in m2.layers
    assert {"knn_smooth", "graph_smooth", "vae_reconstruction"} <= set(metrics["denoise"]["msi"])
    for mod in ("rna", "msi"):
        ent = metrics["heldout_entries"][mod]
        assert {"knn_smooth", "graph_smooth", "vae_reconstruction"} <= set(ent)
    assert set(table["task"]) >= {"denoise", "heldout_entries", "rna_to_msi", "msi_to_rna"}
    assert metrics["heldout_entries"]["msi"]["graph_smooth"]["median_pearson"] > 0.5
    assert set(table.columns) >= {"modality", "task", "method", "feature", "pearson_r",
                                  "spearman_r", "ssim"}
    cm = metrics["crossmodal"]
    assert set(cm) == {"rna_to_msi", "msi_to_rna"}
    for task in cm:
        assert {"ridge", "knn", "vae", "vae_ridge", "best_method", "model_beats_baselines",
                "best_model_method", "model_beats_baselines_spatial"} <= set(cm[task])
        assert cm[task]["ridge"]["n_features_spatial"] > 0
        assert np.isfinite(cm[task]["ridge"]["median_pearson_block"])
        assert "model_beats_baselines_block" in cm[task]
        assert {"decoder_beats_baselines", "decoder_beats_baselines_block"} <= set(cm[task])
        for who in ("model", "decoder"):
            for suffix in ("", "_spatial", "_block"):
                v = cm[task][f"{who}_vs_baselines{suffix}"]
                assert v["baseline"] in ("ridge", "knn")
                assert v["verdict"] in ("better", "worse", "tie")
                assert v["ci95_low"] <= v["ci95_high"] and v["n_features"] > 0
        # the paired comparison is of the methods the point estimates ranked best
        key = "median_pearson"
        v = cm[task]["model_vs_baselines"]
        assert v["method"] == cm[task]["best_model_method"]
        assert cm[task]["decoder_vs_baselines"]["method"] == "vae"
        lead = cm[task][v["method"]][key] - cm[task][v["baseline"]][key]
        assert np.isclose(v["difference"], lead)
    cross_rows = table[table["task"].isin(["rna_to_msi", "msi_to_rna"])]
    assert cross_rows["pearson_r_block"].notna().any()
    assert table.loc[table["task"] == "denoise", "pearson_r_block"].isna().all()
    # the metabolites are a linear function of smooth fields that the genes also carry:
    # held-out prediction from genes must work, and smoothing must help on hidden spots
    assert cm["rna_to_msi"]["ridge"]["median_pearson"] > 0.3
    assert metrics["denoise"]["msi"]["graph_smooth"]["median_pearson"] > 0.5
    assert metrics["cv"]["n_blocks"] == 3 and metrics["cv"]["buffer_um"] > 0
    # the location-only references are scored beside the methods, as neither kind: no layer,
    # never the best method, never in a verdict
    refs = ("location", "location_kriging")
    for task in cm:
        for ref in refs:
            assert np.isfinite(cm[task][ref]["median_pearson_block"])
            assert ref not in (cm[task]["best_method"], cm[task]["best_model_method"])
            assert all(cm[task][f"{w}_vs_baselines{x}"]["method"] != ref
                       for w in ("model", "decoder") for x in ("", "_spatial", "_block"))
            assert (table[(table["task"] == task) & (table["method"] == ref)]["feature"].nunique()
                    == cm[task][ref]["n_features"])
        # ... but each kind's best method is set against the stronger of them on each score,
        # paired on the same features
        for who, pool in (("baseline", ("ridge", "knn")), ("model", ("vae", "vae_ridge")),
                          ("decoder", ("vae",))):
            for suffix in ("", "_spatial", "_block"):
                v = cm[task][f"{who}_vs_location{suffix}"]
                key = f"median_pearson{suffix}"
                assert v["reference"] == max(refs, key=lambda r: cm[task][r][key])
                assert v["method"] in pool
                assert v["method"] == max(pool, key=lambda m: cm[task][m][key])
                assert v["verdict"] in ("better", "worse", "tie") and v["n_features"] > 0
                assert np.isclose(v["difference"], cm[task][v["method"]][key]
                                  - cm[task][v["reference"]][key]) or suffix == "_spatial"
    assert not any("location" in key for a in (r2, m2) for key in a.layers)
    assert metrics["cv"]["reference"].startswith("location:")
    assert "location_kriging:" in metrics["cv"]["reference"]
    # deterministic, and the same to the bit with the fold fits in two worker processes
    r3, m3, metrics3, table3 = run_impute(rna, msi, params, seed=0, model_params=mp,
                                          device="cpu", workers=2)
    for a, b in ((r2, r3), (m2, m3)):
        assert set(a.layers) == set(b.layers)
        for key in a.layers:
            np.testing.assert_array_equal(a.layers[key], b.layers[key], err_msg=key)
    pd.testing.assert_frame_equal(table, table3)
    assert (json.dumps(_without_seconds(metrics), sort_keys=True)  # NaN-safe
            == json.dumps(_without_seconds(metrics3), sort_keys=True))


def _without_seconds(d):
    """A metrics dict without its timings (the one part that varies from run to run)."""
    if isinstance(d, dict):
        return {k: _without_seconds(v) for k, v in d.items() if "seconds" not in k}
    if isinstance(d, list):
        return [_without_seconds(v) for v in d]
    return d


def test_too_wide_buffer_is_a_clear_error():
    from spatialfuse.impute import run_impute

    rna, msi = _paired_synthetic(n_side=8)
    with pytest.raises(ValueError, match="buffer"):
        run_impute(rna, msi, {"buffer_um": 1e5, "models": [], "denoise_models": []}, seed=0)


def test_schema_defaults_match_code():
    from spatialfuse.impute.stage import DEFAULTS

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["impute"]["properties"]
    assert set(props) == set(DEFAULTS)
    for k, v in DEFAULTS.items():
        assert props[k]["default"] == v, k


def test_morans_i_separates_smooth_maps_from_noise():
    from spatialfuse.impute.scores import SPATIAL_MORAN_MIN, morans_i

    xy = _hex_grid()
    rng = np.random.default_rng(3)
    smooth = _field(xy, 400.0, 0.0)
    I = morans_i(np.c_[smooth, rng.permutation(smooth), rng.normal(size=len(xy))], xy)
    assert I[0] > 0.5 and abs(I[1]) < SPATIAL_MORAN_MIN and abs(I[2]) < SPATIAL_MORAN_MIN


def test_blockwise_pearson_ignores_level_shifts_between_blocks():
    from spatialfuse.impute.scores import blockwise_pearson, feature_scores, summarise

    xy = _hex_grid()
    rng = np.random.default_rng(4)
    blocks = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
    truth = _field(xy, 300.0, 0.5) + 3.0 * blocks  # block 1 sits higher
    # right map inside each block, wrong level: each block predicted from the other's mean
    pred = _field(xy, 300.0, 0.5) + rng.normal(0, 0.2, len(xy)) - 3.0 * blocks
    shuffled = np.empty_like(pred)
    for b in (0, 1):
        shuffled[blocks == b] = rng.permutation(pred[blocks == b])
    P, M = np.c_[pred, shuffled], np.c_[truth, truth]
    rb = blockwise_pearson(P, M, blocks)
    pooled = feature_scores(P, M, xy, blocks=blocks)
    assert pooled["pearson_r"][0] < 0 < 0.9 < rb[0]  # pooled r blames the level shift
    assert abs(rb[1]) < 0.2  # a map shuffled within blocks scores ~0 either way
    np.testing.assert_allclose(pooled["pearson_r_block"], rb)
    # weighted by spot count; tiny blocks skipped; constant maps give NaN
    one = np.r_[np.zeros(len(xy) - 3, int), np.ones(3, int)]
    assert blockwise_pearson(P[:, :1], M[:, :1], one)[0] == pytest.approx(
        np.corrcoef(P[one == 0, 0], M[one == 0, 0])[0, 1])
    assert np.isnan(blockwise_pearson(np.ones((10, 1)), np.ones((10, 1)), np.zeros(10)))[0]
    s = summarise(pooled, np.array([True, False]))
    assert s["median_pearson_block_spatial"] == pytest.approx(rb[0])


@pytest.mark.parametrize("name", ["gnn", "transformer"])
def test_block_masking_hides_one_modality_at_every_node_of_a_batch(name):
    import torch

    from spatialfuse.models import prepare_inputs
    from spatialfuse.models.batching import FitData, SpotBatcher, TileBatcher

    rna, msi = _paired_synthetic()
    inputs = prepare_inputs(rna, msi)
    data = FitData(inputs, np.ones(rna.n_obs, bool), n_pcs=4, k=6, rna_nb=True, seed=0,
                   device="cpu")
    idx = np.arange(rna.n_obs)

    def make(p):
        if name == "gnn":
            return TileBatcher(data, 32, 0.5, n_layers=2, k=6, block_mask_prob=p)
        return SpotBatcher(data, 32, 0.5, n_tokens=7, block_mask_prob=p)

    def seen(b):  # what the targets' own encoders see, and the context nodes
        own = b.extra["centre_visible"] if name == "transformer" else b.visible[b.pos]
        return own, b.visible

    hidden = []
    for b in make(1.0).batches(idx, np.random.default_rng(0), data.base_visible, train=True):
        own, nodes = seen(b)
        j = [m for m in range(2) if not nodes[:, m].any()]
        assert len(j) == 1 and not own[:, j[0]].any() and own[:, 1 - j[0]].all()
        hidden.append(j[0])
    assert set(hidden) == {0, 1}  # both directions are trained
    # probability 0: the per-spot masks, drawn exactly as without the option
    a = [seen(b)[0] for b in make(0.0).batches(idx, np.random.default_rng(0), data.base_visible,
                                                True)]
    ref = TileBatcher(data, 32, 0.5, n_layers=2, k=6) if name == "gnn" else \
        SpotBatcher(data, 32, 0.5, n_tokens=7)
    r = [seen(b)[0] for b in ref.batches(idx, np.random.default_rng(0), data.base_visible, True)]
    assert all(torch.equal(x, y) for x, y in zip(a, r)) and len(a) == len(r)
    assert any(not x.all() for x in a)  # per-spot masking still hides some spots


def test_fold_fit_params_cap_steps_and_pass_block_masking_to_attention_models_only():
    from spatialfuse.impute.stage import DEFAULTS, _model_params

    p = _model_params(["vae", "gnn", "transformer"], {"gnn": {"max_steps": 100}}, 400, 0.1, 0.3)
    assert p["vae"]["max_steps"] == 400 and p["gnn"]["max_steps"] == 100  # a cap, not a floor
    assert "block_mask_prob" not in p["vae"]  # the VAE has no neighbour tokens to hide
    assert p["gnn"]["block_mask_prob"] == p["transformer"]["block_mask_prob"] == 0.3
    off = _model_params(["gnn"], {}, 400, 0.1, DEFAULTS["block_mask_prob"])
    assert "block_mask_prob" not in off["gnn"]
    assert "min_epochs" not in off["gnn"]
    floor = _model_params(["vae"], {}, 400, 0.1, min_epochs=DEFAULTS["model_min_epochs"])
    assert floor["vae"]["min_epochs"] == 30 and floor["vae"]["max_steps"] == 400


def test_step_cap_stops_no_fit_before_its_minimum_epochs():
    """A step cap set for Visium-size sections cut a whole Visium HD area's fold fits off after
    10-14 epochs; with ``min_epochs`` the fit runs on past the cap to that many epochs."""
    from spatialfuse.models import prepare_inputs
    from spatialfuse.models.api import fit

    rna, msi = _paired_synthetic(n_side=12)
    inputs = prepare_inputs(rna, msi)
    small = {"hidden_dim": 16, "latent_dim": 4, "input_pcs": 4, "max_steps": 2, "patience": 100}
    capped = fit("vae", inputs, small, seed=0, device="cpu")
    floored = fit("vae", inputs, {**small, "min_epochs": 5}, seed=0, device="cpu")
    assert capped.metrics["epochs_run"] == 1  # >= 8 steps per epoch: the cap stops it at once
    assert floored.metrics["epochs_run"] == 5
    # the floor's own limit: 8 steps per epoch, stopped once 20 steps are done (epoch 3)
    limited = fit("vae", inputs, {**small, "min_epochs": 5, "min_epochs_max_steps": 20}, seed=0,
                  device="cpu")
    assert limited.metrics["epochs_run"] == 3


def test_expected_log1p_nb_matches_the_distribution_and_rises_with_depth():
    import torch
    from scipy.stats import nbinom

    from spatialfuse.models.modules import expected_log1p_nb

    mu = torch.tensor([[0.05, 0.5, 3.0, 40.0]], dtype=torch.float64)
    theta = torch.tensor([0.5, 2.0, 5.0, 10.0], dtype=torch.float64)
    f = torch.tensor([[1.5]], dtype=torch.float64)
    got = expected_log1p_nb(mu, theta, f).numpy()[0]
    k = np.arange(5000)
    for j in range(4):
        m, t = float(mu[0, j]), float(theta[j])
        ref = (nbinom.pmf(k, t, t / (t + m)) * np.log1p(1.5 * k)).sum()
        assert got[j] == pytest.approx(ref, rel=0.02 if m > 8 else 1e-6), j  # delta vs exact
    # the same proportion of the genes at a deeper spot: its log-normalised value (normalised
    # to the same total) is higher for a sparse gene (Jensen) — what a depth head can predict
    lib = torch.tensor([[1000.0], [4000.0]], dtype=torch.float64)
    e = expected_log1p_nb(1e-4 * lib, torch.tensor([1.0], dtype=torch.float64), 5000.0 / lib)
    assert float(e[1, 0]) > 1.5 * float(e[0, 0])
    # across dispersions from near-geometric to near-Poisson and means up to the exact
    # sum's limit (the probabilities come from a recurrence, not per-k log-gamma terms)
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.001, 7.9, (6, 5))
    theta = np.array([0.02, 0.3, 2.0, 30.0, 1000.0])
    f = rng.uniform(0.2, 5.0, (6, 1))
    got = expected_log1p_nb(*(torch.tensor(a) for a in (mu, theta, f))).numpy()
    for i in range(6):
        for j in range(5):
            t = theta[j]
            pmf = nbinom.pmf(k[:64], t, t / (t + mu[i, j]))
            ref = (pmf * np.log1p(f[i, 0] * k[:64])).sum() + max(1 - pmf.sum(), 0) * np.log1p(
                f[i, 0] * 64)
            assert got[i, j] == pytest.approx(ref, rel=1e-6), (i, j)  # NB_EPS guards


def test_source_only_batches_hide_the_other_modality_everywhere_from_unmasked_inputs():
    import torch

    from spatialfuse.models import prepare_inputs
    from spatialfuse.models.batching import FitData, SpotBatcher, TileBatcher
    from spatialfuse.models.modules import source_only

    rna, msi = _paired_synthetic()
    inputs = prepare_inputs(rna, msi)
    fit = np.ones(rna.n_obs, bool)
    fit[:20] = False  # held-out spots stay invisible in every view
    data = FitData(inputs, fit, n_pcs=4, k=6, rna_nb=True, seed=0, device="cpu")
    idx = np.nonzero(fit)[0]
    for batcher in (TileBatcher(data, 32, 0.5, n_layers=2, k=6),
                    SpotBatcher(data, 32, 0.5, n_tokens=7), SpotBatcher(data, 32, 0.5)):
        for b in batcher.batches(idx, np.random.default_rng(0), data.base_visible, train=True):
            base = data.base_visible[torch.as_tensor(b.nodes)]
            for src in (0, 1):
                v = source_only(b, src)
                assert not v.visible[:, 1 - src].any()
                # the source as it is at prediction time: every fitting node, none masked
                assert torch.equal(v.visible[:, src], base[:, src])
                own = v.extra.get("centre_visible", v.visible[v.pos])  # the targets' own
                assert torch.equal(own[:, src], base[b.pos][:, src]) and not own[:, 1 - src].any()


def test_fold_fit_options_are_off_by_default_in_the_models_and_reach_crossmodal_fits_only():
    from spatialfuse.impute.stage import DEFAULTS, FOLD_FIT_KEYS, _model_params
    from spatialfuse.models import prepare_inputs
    from spatialfuse.models.api import DEFAULTS as MODEL_DEFAULTS
    from spatialfuse.models.api import fit

    for name, d in MODEL_DEFAULTS.items():  # the model stage never sets them
        assert not set(FOLD_FIT_KEYS) & set(d), name
    p = _model_params(["vae", "gnn"], {}, 400, 0.1, 0.0, 1.0,
                      fold_fit={k: DEFAULTS[k] for k in FOLD_FIT_KEYS})
    assert p["gnn"]["depth_head"] is True and "cross_weight" not in p["gnn"]  # 0/False: left out
    assert "depth_head" not in _model_params(["gnn"], {}, 400, 0.1)["gnn"]  # only when passed
    rna, msi = _paired_synthetic()
    inputs = prepare_inputs(rna, msi)
    small = {"max_steps": 2, "hidden_dim": 16, "latent_dim": 4, "input_pcs": 4}
    plain = fit("vae", inputs, small, seed=0, device="cpu").module
    assert plain.decoders.depth_net is None and plain.translation is None and plain.w_cross == 0
    on = fit("vae", inputs, {**small, "depth_head": True, "cross_weight": 1.0,
                             "linear_path": True}, seed=0, device="cpu")
    assert on.module.decoders.depth_net is not None and on.module.translation is not None
    assert {"nll_msi_from_rna", "nll_rna_from_msi"} <= set(on.train_log.columns)
    one = fit("gnn", inputs, {**small, "linear_path": "rna_to_msi"}, seed=0, device="cpu")
    assert set(one.module.translation) == {"rna"}  # genes -> metabolites only
    with pytest.raises(ValueError, match="linear_path"):
        fit("vae", inputs, {**small, "linear_path": "both"}, seed=0, device="cpu")


def test_transductive_fits_train_on_every_spots_source_and_never_on_heldout_targets():
    import torch

    from spatialfuse.models import prepare_inputs
    from spatialfuse.models.api import fit
    from spatialfuse.models.batching import FitData, SpotBatcher, TileBatcher

    rna, msi = _paired_synthetic()
    train = np.ones(rna.n_obs, bool)
    train[:60] = False  # held-out block + buffer
    inputs = prepare_inputs(rna, msi, stats_mask=train)
    data = FitData(inputs, train, n_pcs=4, k=6, rna_nb=True, seed=0, device="cpu", source="rna")
    vis = data.base_visible.numpy()
    assert vis[:, 0].all() and (vis[:, 1] == train).all()  # genes everywhere, MSI on train
    assert (data.source_only == ~train).all()
    # the source projection is fitted on every spot, the target's on the training spots only
    ref = FitData(inputs, train, n_pcs=4, k=6, rna_nb=True, seed=0, device="cpu")
    assert not np.allclose(data.components["rna"][1], ref.components["rna"][1])
    np.testing.assert_array_equal(data.components["msi"][0], ref.components["msi"][0])
    idx = np.arange(rna.n_obs)
    for batcher in (TileBatcher(data, 32, 1.0, n_layers=2, k=6),
                    SpotBatcher(data, 32, 1.0, n_tokens=7), SpotBatcher(data, 32, 1.0)):
        for b in batcher.batches(idx, np.random.default_rng(0), data.base_visible, train=True):
            held = torch.as_tensor(~train[b.targets])
            own = b.extra.get("centre_visible", b.visible[b.pos])
            # a source-only target: its genes visible (never masked), its MSI hidden and out
            # of the loss; the context nodes never show a held-out spot's MSI
            assert own[held, 0].all() and not own[held, 1].any()
            assert not b.visible[torch.as_tensor(~train[b.nodes]), 1].any()
            lv = b.loss_visible
            assert lv is not None if held.any() else lv is None
            if lv is not None:
                assert torch.equal(lv[:, 1], ~held) and lv[:, 0].all()
            # mask_prob 1: every training spot with both modalities hides one of them
            both = ~held
            assert (own[both].sum(1) == 1).all()
    small = {"max_steps": 16, "hidden_dim": 16, "latent_dim": 4, "input_pcs": 4}

    def weights(rna_ad, msi_ad, transductive):
        inp = prepare_inputs(rna_ad, msi_ad, stats_mask=train)
        fm = fit("gnn", inp, small, seed=0, device="cpu", train_mask=train,
                 transductive=transductive)
        return torch.cat([v.ravel() for v in fm.module.state_dict().values()])

    w = weights(rna, msi, "rna")
    msi2 = msi.copy()
    msi2.X[~train] = -20.0  # held-out targets: the trained weights must not move
    assert torch.equal(w, weights(rna, msi2, "rna"))
    rna2 = rna.copy()
    rna2.X[~train] = rna.X[~train][::-1]  # held-out sources: they now train the model
    rna2.layers[Key.layers.counts][~train] = rna.layers[Key.layers.counts][~train][::-1]
    assert not torch.equal(w, weights(rna2, msi, "rna"))
    # ... while an inductive fit never reads them
    assert torch.equal(weights(rna, msi, None), weights(rna2, msi, None))
    with pytest.raises(ValueError, match="transductive"):
        fit("gnn", inputs, small, seed=0, device="cpu", train_mask=train, transductive="both")


def test_loss_terms_average_over_the_spots_that_carry_the_modality():
    from types import SimpleNamespace

    import torch

    from spatialfuse.models.modules import _visible_mean, _visible_terms

    lp_r, lp_m = torch.tensor([-1.0, -2.0, -3.0, -4.0]), torch.tensor([-5.0, -6.0, 1e9, 1e9])
    lv = torch.tensor([[True, True], [True, True], [True, False], [True, False]])
    b = SimpleNamespace(loss_visible=lv)
    r, m = _visible_terms(b, lp_r, lp_m)
    # source-only spots (MSI hidden): their MSI values never enter, and the MSI term keeps the
    # weight it has in an inductive batch (a mean over the spots that carry MSI)
    assert float(_visible_mean(b, m, 1)) == -5.5 and float(_visible_mean(b, r, 0)) == -2.5
    plain = SimpleNamespace(loss_visible=None)
    assert float(_visible_mean(plain, *_visible_terms(plain, lp_r, lp_m)[:1], 0)) == -2.5


def test_paired_median_difference_calls_clear_leads_and_ties():
    from spatialfuse.impute.scores import paired_median_difference

    rng = np.random.default_rng(0)
    base = rng.normal(0.2, 0.1, 300)
    better = paired_median_difference(base + 0.05 + rng.normal(0, 0.02, 300), base)
    assert better["verdict"] == "better" and better["ci95_low"] > 0 and better["wilcoxon_p"] < 1e-6
    assert 0.03 < better["difference"] < 0.07
    worse = paired_median_difference(base - 0.05, base)
    assert worse["verdict"] == "worse" and worse["ci95_high"] < 0
    # a lead of 0.002 against per-feature noise of 0.1 is no lead
    tie = paired_median_difference(base + 0.002 + rng.normal(0, 0.1, 300), base)
    assert tie["verdict"] == "tie" and tie["ci95_low"] < 0 < tie["ci95_high"]
    # NaN pairs are dropped, the result is seeded, too few features give no verdict
    a = np.r_[base[:50], np.nan]
    b = np.r_[base[:50] - 0.1, 0.0]
    r1, r2 = paired_median_difference(a, b, seed=3), paired_median_difference(a, b, seed=3)
    assert r1 == r2 and r1["n_features"] == 50 and r1["verdict"] == "better"
    assert paired_median_difference(base[:4], base[:4] - 1)["verdict"] == "n/a"
    # pooled over runs: features resampled within each run (stratum); a lead in both runs holds
    strata = np.r_[np.zeros(150), np.ones(150)]
    pooled = paired_median_difference(base + 0.05 + rng.normal(0, 0.02, 300), base,
                                      strata=strata)
    assert pooled["verdict"] == "better" and pooled["n_features"] == 300
    assert pooled["ci95_low"] > 0.03
    assert np.isclose(pooled["difference"], better["difference"], atol=0.02)
    # a lead carried by a few blocks of features that move together: one by one, the 300
    # features look like 300 pieces of evidence; resampled as their 10 blocks, it is a tie
    blocks = np.repeat(np.arange(10), 30)
    b_ = np.repeat(np.linspace(0.1, 0.3, 10), 30) + np.random.default_rng(1).normal(0, 0.01, 300)
    a_ = b_ + np.repeat([0.06, -0.04, 0.05, 0.03, -0.05, 0.04, 0.02, -0.03, 0.05, 0.01], 30)
    one_by_one = paired_median_difference(a_, b_)
    clustered = paired_median_difference(a_, b_, clusters=blocks)
    assert one_by_one["verdict"] == "better" and clustered["verdict"] == "tie"
    assert clustered["n_clusters"] == 10 and clustered["difference"] == one_by_one["difference"]
    assert clustered["ci95_high"] - clustered["ci95_low"] > 4 * (one_by_one["ci95_high"]
                                                                  - one_by_one["ci95_low"])
    # every feature its own cluster: the one-by-one interval again (other draws, same spread)
    single = paired_median_difference(a_, b_, clusters=np.arange(300))
    assert single["verdict"] == "better" and single["n_clusters"] == 300
    assert abs(single["ci95_low"] - one_by_one["ci95_low"]) < 0.003
    # clusters within strata: the same label in two runs is two units
    two_runs = paired_median_difference(a_, b_, strata=np.repeat([0, 1], 150), clusters=blocks % 5)
    assert two_runs["n_clusters"] == 10


def test_weighted_medians_are_the_medians_of_the_resampled_lists():
    from spatialfuse.impute.scores import _weighted_medians

    rng = np.random.default_rng(0)
    v = rng.normal(size=37)
    w = rng.integers(0, 4, size=(50, 37))
    w[:, 0] += 1
    want = [np.median(np.repeat(v, row)) for row in w]
    assert np.allclose(_weighted_medians(v, w), want)


def test_feature_clusters_group_features_that_move_together():
    from spatialfuse.impute.scores import feature_clusters

    rng = np.random.default_rng(0)
    F = rng.normal(size=(400, 3))
    Y = np.c_[F[:, [0]] + 0.3 * rng.normal(size=(400, 10)), -F[:, [1]] + 0.3 * rng.normal(size=(400, 10)),
              F[:, [2]] + 0.3 * rng.normal(size=(400, 10)), rng.normal(size=(400, 5)), np.ones((400, 1))]
    Y[:, 10:15] *= -1  # anti-correlated features move together too
    lab = feature_clusters(Y)
    for k in range(3):
        assert len(set(lab[10 * k:10 * k + 10])) == 1
    assert len(set(lab[[0, 10, 20]])) == 3
    # independent noise and a constant feature: a cluster each
    assert len(set(lab[30:])) == 6 and not set(lab[30:]) & set(lab[:30])


def test_sparse_fold_finds_a_single_source_feature_and_never_reads_heldout_targets():
    from spatialfuse.impute.crossmodal import baseline_fold, inner_splits, sparse_fold
    from spatialfuse.metrics import columnwise_corr

    xy = _hex_grid(16)
    rng = np.random.default_rng(0)
    n = len(xy)
    domains = np.c_[[_field(xy, w, ph) for w, ph in ((300, 0.0), (500, 1.5))]].T
    own = _field(xy @ [[0.8, -0.6], [0.6, 0.8]], 200, 2.5)  # one feature's own smooth signal,
    own -= np.c_[domains, np.ones(n)] @ np.linalg.lstsq(np.c_[domains, np.ones(n)], own,
                                                        rcond=None)[0]  # not the domains'
    own /= own.std()
    S = domains @ rng.normal(0, 1, (2, 80)) + rng.normal(0, 1.0, (n, 80))
    S[:, 17] = own + rng.normal(0, 0.3, n)
    Y = np.c_[own + rng.normal(0, 0.3, n),                 # tied to source feature 17 only
              domains @ [1.0, -0.5] + rng.normal(0, 0.3, n),  # what many features share
              rng.normal(0, 1.0, n),                       # nothing predicts it
              np.full(n, 2.0)]                             # constant
    test = xy[:, 0] < np.quantile(xy[:, 0], 0.25)  # a contiguous held-out block
    train = ~test
    groups = inner_splits(xy, train, 4, seed=1)
    assert len(groups) == 4
    for fit, score in groups:  # blocks of the training spots only, each scored once
        assert not (fit & score).any() and not ((fit | score) & test).any()
        assert ((fit | score) == train).all()
    assert (sum(score.astype(int) for _, score in groups) == train).all()
    F = np.c_[baseline_fold.__globals__["_pcs"](S, train, 10, 0), S]
    P = sparse_fold(F, Y, train, test, groups)
    r = columnwise_corr(P[:, :2], Y[test, :2])
    ridge = baseline_fold("ridge", S, Y[:, :2], train, test, n_comps=10)
    assert r[0] > 0.8 and r[0] > columnwise_corr(ridge, Y[test, :2])[0] + 0.3
    assert r[1] > 0.8  # the shared (component) signal is kept
    # an unpredictable target gets (nearly) its training mean; a constant one exactly that
    assert P[:, 2].std() < 0.2 * P[:, 0].std()
    np.testing.assert_allclose(P[:, 3], 2.0)
    # held-out targets are never read; the result is deterministic
    Y2 = Y.copy()
    Y2[test] = 1e3
    np.testing.assert_array_equal(P, sparse_fold(F, Y2, train, test, groups))
    # with a base ridge: the tied target keeps its lasso (strong evidence on the inner blocks),
    # the shared-signal target, where the lasso is no better, gets exactly the ridge's
    # prediction (the noise target's lasso, its training mean, beats a ridge fitted to noise)
    pcs = F[:, :10]
    ev: list = []
    Pb = sparse_fold(F, Y[:, :3], train, test, groups, base=pcs, margin=2.0, evidence=ev)
    ridge3 = baseline_fold("ridge", S, Y[:, :3], train, test, n_comps=10)
    assert ev[0][0] < -2.0 < ev[0][1]
    np.testing.assert_allclose(Pb[:, 0], P[:, 0])
    np.testing.assert_allclose(Pb[:, 1], ridge3[:, 1])
    # an infinite margin is the ridge everywhere; held-out targets are still never read
    np.testing.assert_allclose(sparse_fold(F, Y[:, :3], train, test, groups, base=pcs,
                                           margin=np.inf), ridge3)
    np.testing.assert_array_equal(
        Pb, sparse_fold(F, Y2[:, :3], train, test, groups, base=pcs, margin=2.0))


def test_sparse_links_add_a_sparse_baseline_and_model_hybrids():
    from spatialfuse.impute import run_impute

    rna, msi = _paired_synthetic(n_side=12)
    params = {"n_blocks": 3, "models": ["vae"], "model_min_epochs": 0, "model_max_steps": 10, "denoise_folds": 3,
              "denoise_models": [], "sparse_links": True}
    mp = {"vae": {"hidden_dim": 16, "latent_dim": 4, "input_pcs": 4}}
    _, m2, metrics, table = run_impute(rna, msi, params, seed=0, model_params=mp, device="cpu")
    cm = metrics["crossmodal"]
    assert metrics["cv"]["sparse_links"] is True
    for task in cm:
        assert {"ridge", "knn", "sparse", "vae", "vae_ridge", "vae_sparse"} <= set(cm[task])
        # sparse reads no model: it is a baseline; the hybrid with the latent is model-based
        for suffix in ("", "_spatial", "_block"):
            v = cm[task][f"model_vs_baselines{suffix}"]
            assert v["baseline"] in ("ridge", "knn", "sparse") and v["method"] != "sparse"
    assert {"sparse_from_rna", "vae_sparse_from_rna"} <= set(table["method"])
    assert Key.layers.imputed("sparse_from_rna") in m2.layers
    assert cm["rna_to_msi"]["sparse"]["median_pearson"] > 0.3


def test_shared_components_are_timed_apart_from_the_methods(monkeypatch):
    """metrics.json's per-method seconds: the source components computed once per fold and
    direction (shared by ridge, kNN and the hybrids) used to be charged to whichever baseline
    came first (ridge)."""
    from spatialfuse.impute import crossmodal, run_impute

    real = crossmodal._pcs

    def slow_pcs(*a, **k):
        time.sleep(0.1)
        return real(*a, **k)

    monkeypatch.setattr(crossmodal, "_pcs", slow_pcs)
    rna, msi = _paired_synthetic(n_side=10)
    params = {"n_blocks": 3, "models": [], "denoise_models": [], "denoise_folds": 3}
    _, _, metrics, _ = run_impute(rna, msi, params, seed=0)
    # 3 folds × 2 directions, computed once each (ridge alone takes ~0.02 s here; charged
    # with the components it took > 0.6 s)
    assert metrics["cv"]["components_seconds"] >= 6 * 0.1
    for task in ("rna_to_msi", "msi_to_rna"):
        assert metrics["crossmodal"][task]["ridge"]["seconds"] < 0.4


def _partly_measured(seed: int = 0):
    """The synthetic pair as one ST section of which the MSI covers only the left ~3/4: the
    paired spots, every ST spot, and the MSI the right quarter would have had (held back)."""
    rna, msi = _paired_synthetic(seed)
    xy = rna.obsm[Key.obsm.spatial]
    measured = xy[:, 0] < np.quantile(xy[:, 0], 0.75)
    return rna[measured].copy(), msi[measured].copy(), rna, msi[~measured].copy()


def test_unmeasured_spots_get_metabolites_predicted_from_their_genes(tmp_path, caplog):
    import anndata as ad
    import pandas as pd

    from spatialfuse.errors import InputError
    from spatialfuse.impute import baseline_fold, knn_smooth, predict_unmeasured, run_impute
    from spatialfuse.impute.stage import scored_genes

    rna, msi, st, truth = _partly_measured()
    params = {"n_blocks": 3, "models": [], "denoise_models": []}
    _, m2, metrics, table = run_impute(rna, msi, params, seed=0)
    assert metrics["cv"]["heldout_distance_um"]["max"] > 0
    # without joint models only the baselines are set against location alone
    cm = metrics["crossmodal"]["rna_to_msi"]
    assert cm["baseline_vs_location_block"]["method"] in ("ridge", "knn")
    assert not any(k.startswith(("model_", "decoder_")) for k in cm)
    st0 = st.X.copy()
    cov = pd.DataFrame({Key.obs.coverage: np.where(st.obs_names.isin(rna.obs_names), 1.0, 0.1)},
                       index=st.obs_names)
    genes_only = {**params, "unmeasured_extrapolation": "never"}
    for method in ("ridge", "knn"):
        metrics["crossmodal"]["rna_to_msi"]["best_method"] = method
        out, summary = predict_unmeasured(st, rna, m2, metrics, table, genes_only, seed=0,
                                          coverage=cov, sample="s1")
        np.testing.assert_array_equal(st.X, st0)  # input untouched
        assert list(out.obs_names) == list(truth.obs_names) and list(out.var_names) == list(
            msi.var_names)
        assert summary["n_spots"] == truth.n_obs and summary["method"] == method
        assert summary["output"] == "genes"
        np.testing.assert_array_equal(out.X, out.layers[Key.layers.imputed(f"{method}_from_rna")])
        assert (out.obs["distance_to_measured_um"] > 0).all()
        assert (out.obs[Key.obs.coverage] == 0.1).all()
        assert np.isfinite(out.var["heldout_pearson_r"]).all()
        # exactly the baseline fitted on every measured spot, its genes smoothed over all spots
        measured = st.obs_names.isin(rna.obs_names)
        genes = scored_genes(st)
        Xr = np.asarray(st.X, float)[:, genes]
        Xm = np.zeros((st.n_obs, msi.n_vars))
        Xm[measured] = np.asarray(msi.X, float)
        ref = baseline_fold(method, knn_smooth(Xr, st.obsm[Key.obsm.spatial]), Xm, measured,
                            ~measured, seed=0)
        np.testing.assert_allclose(out.X, ref, rtol=1e-5, atol=1e-5)
        # and it predicts the MSI the unmeasured quarter would have had
        r = [np.corrcoef(out.X[:, j], np.asarray(truth.X)[:, j])[0, 1] for j in range(msi.n_vars)]
        assert np.median(r) > 0.3, (method, np.median(r))
        # ... at least as well as the held-out blocks said (one fit on every measured spot,
        # no level shifts between fold models: the blocked CV's score is the cautious one)
        held = metrics["crossmodal"]["rna_to_msi"][method]["median_pearson"]
        assert np.median(r) > held - 0.05 and summary["heldout_pearson_median"] == held
    # the figure gains the row of the whole section (measured + predicted)
    from spatialfuse.plots.stages import impute_figure

    impute_figure(m2, table, tmp_path / "p.png", "s1", method=f"{method}_from_rna",
                  unmeasured=out)
    assert (tmp_path / "p.png").stat().st_size > 10_000
    # ... with every spot at the section's size and shape (here as if 16 µm Visium HD bins)
    added = drawn_collections(lambda: impute_figure(
        m2, table, tmp_path / "hd.png", "s1", method=f"{method}_from_rna", unmeasured=out,
        spot_um=16.0, square=True))
    spots = [c for c in added if type(c).__name__ in ("PolyCollection", "EllipseCollection")]
    assert len(spots) == 3 * 2 + 3 * 2  # measured, predicted; then measured + unmeasured
    assert all(type(c).__name__ == "PolyCollection" for c in spots)
    for c in spots:
        np.testing.assert_allclose(np.abs(polygon_shapes(c)), 8.0, atol=1e-9)
    # a joint model's hybrid goes through the same per-fold code, deterministically
    params_m = {**params, "models": ["vae"], "model_min_epochs": 0, "model_max_steps": 30}
    mp = {"vae": {"hidden_dim": 16, "latent_dim": 4, "input_pcs": 4}}
    metrics["crossmodal"]["rna_to_msi"]["best_method"] = "vae_ridge"
    m2.layers[Key.layers.imputed("vae_ridge_from_rna")] = m2.layers[
        Key.layers.imputed("ridge_from_rna")]  # (the CV's out-of-fold values, not fitted here)
    a, s1 = predict_unmeasured(st, rna, m2, metrics, table, params_m, seed=0, model_params=mp)
    b, _ = predict_unmeasured(st, rna, m2, metrics, table, params_m, seed=0, model_params=mp)
    assert s1["method"] == "vae_ridge" and np.isfinite(a.X).all()
    np.testing.assert_array_equal(a.X, b.X)
    # spots further from measured ones than the CV ever scored are flagged, and said so
    far = dict(metrics, cv={**metrics["cv"], "heldout_distance_um": {"max": 150.0}})
    with caplog.at_level("WARNING", logger="spatialfuse.impute.unmeasured"):
        out, summary = predict_unmeasured(st, rna, m2, far, table, params, sample="s1")
    beyond = out.obs["distance_to_measured_um"] > 150.0
    assert 0 < beyond.sum() < out.n_obs
    np.testing.assert_array_equal(out.obs["beyond_validated_distance"], beyond)
    assert summary["n_beyond_validated_distance"] == beyond.sum()
    assert "beyond any distance the cross-validation scored" in caplog.text
    # nothing unmeasured: an empty table and no fit
    out, summary = predict_unmeasured(rna, rna, m2, metrics, table, params, seed=0)
    assert out.n_obs == 0 and out.n_vars == msi.n_vars and summary["n_spots"] == 0
    # paired spots that the ST file does not have: a clear error naming sample and file
    with pytest.raises(InputError, match="sample 's1'.*st.h5ad.*not spots"):
        predict_unmeasured(st[:50].copy(), rna, m2, metrics, table, params, sample="s1",
                           st_path="results/s1/ingest/st.h5ad")
    assert isinstance(out, ad.AnnData)


def test_unmeasured_spots_average_genes_with_the_kriged_measured_msi_where_the_cv_says_so():
    """Metabolite maps carry a smooth field of their own that no gene follows: next to the
    measured region the measured MSI knows it, the genes do not. The cross-validation sees
    that (held-out blocks, extrapolated from their fold's training spots), so ``auto`` averages
    the two, and the average predicts the held-back quarter better than the genes alone."""
    from spatialfuse.impute import predict_unmeasured, run_impute
    from spatialfuse.impute.cv import extrapolate_idw, krige_extrapolate
    from spatialfuse.impute.scores import spot_pitch_um
    from spatialfuse.impute.unmeasured import combine_standardised

    # the parts: inverse-distance weights (the location reference's), kriging (the unmeasured
    # spots' extrapolation), and an average of standardised columns
    src = np.array([[0.0, 0.0], [100.0, 0.0]])
    vals = np.array([[1.0, 10.0], [3.0, 10.0]])
    np.testing.assert_allclose(extrapolate_idw(src, vals, np.array([[50.0, 0.0]]), k=2), [[2.0, 10.0]])
    np.testing.assert_allclose(extrapolate_idw(src, vals, np.array([[0.0, 0.0]]), k=2)[0, 0],
                               (1 + 3e-4) / (1 + 1e-4), rtol=1e-9)  # at a measured spot: ~it
    G = np.c_[np.arange(5.0), np.ones(5)]
    E = np.c_[10 * np.arange(5.0)[::-1], np.arange(5.0)]
    C = combine_standardised(G, E)
    assert np.allclose(C[:, 0], C[0, 0])  # opposite patterns of equal weight cancel out
    np.testing.assert_allclose(np.corrcoef(C[:, 1], E[:, 1])[0, 1], 1.0)  # constant G: E's map
    np.testing.assert_allclose(C.mean(0), 0.5 * (G.mean(0) + E.mean(0)))

    rna, msi, st, truth = _partly_measured()
    xy_all = st.obsm[Key.obsm.spatial]
    own = np.sin(xy_all[:, 1] / 180.0 + 0.3)[:, None] * np.linspace(0.5, 1.5, msi.n_vars)
    measured = st.obs_names.isin(rna.obs_names)
    msi.X = (np.asarray(msi.X) + 2 * own[measured]).astype(np.float32)
    held_back = np.asarray(truth.X) + 2 * own[~measured]
    params = {"n_blocks": 3, "models": [], "denoise_models": []}
    _, m2, metrics, table = run_impute(rna, msi, params, seed=0)
    metrics["crossmodal"]["rna_to_msi"]["best_method"] = "ridge"

    def med_r(P):
        return np.median([np.corrcoef(P[:, j], held_back[:, j])[0, 1] for j in range(P.shape[1])])

    out, summary = predict_unmeasured(st, rna, m2, metrics, table, params, seed=0)
    med = summary["heldout_block_median"]
    assert summary["output"] == "combined" and med["combined"] > med["genes"], med
    genes = out.layers[Key.layers.imputed("ridge_from_rna")]
    both = out.layers[Key.layers.imputed("ridge_from_rna_and_msi")]
    extra = out.layers[Key.layers.imputed("extrapolated_from_msi")]
    np.testing.assert_array_equal(out.X, both)
    np.testing.assert_allclose(extra, krige_extrapolate(
        xy_all[measured], [np.asarray(msi.X)], xy_all[~measured], spot_pitch_um(xy_all))[0],
        rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(both, combine_standardised(genes, extra), rtol=1e-4, atol=1e-4)
    assert med_r(both) > med_r(genes) + 0.05, (med_r(both), med_r(genes))
    # the quoted held-out scores are the output's own, per metabolite too
    np.testing.assert_allclose(out.var["heldout_pearson_r_block"],
                               out.var["heldout_pearson_r_block_combined"])
    assert summary["heldout_pearson_block_median"] == pytest.approx(med["combined"])
    # never: the genes alone, whatever the CV says; always: the average, whatever it says
    out_n, s_n = predict_unmeasured(st, rna, m2, metrics, table,
                                    {**params, "unmeasured_extrapolation": "never"}, seed=0)
    assert s_n["output"] == "genes"
    np.testing.assert_array_equal(out_n.X, genes)
    # without such a field: auto follows the CV's medians, always averages regardless
    rna0, msi0, st0, _ = _partly_measured()
    _, m0, metrics0, table0 = run_impute(rna0, msi0, params, seed=0)
    metrics0["crossmodal"]["rna_to_msi"]["best_method"] = "ridge"
    _, s0 = predict_unmeasured(st0, rna0, m0, metrics0, table0, params, seed=0)
    a, s_a = predict_unmeasured(st0, rna0, m0, metrics0, table0,
                                {**params, "unmeasured_extrapolation": "always"}, seed=0)
    assert s_a["output"] == "combined"
    np.testing.assert_array_equal(a.X, a.layers[Key.layers.imputed("ridge_from_rna_and_msi")])
    m0_ = s0["heldout_block_median"]
    assert s0["output"] == ("combined" if m0_["combined"] > m0_["genes"] else "genes")
    # the CV's OOF layer of the chosen method is required (the MSI run_impute returns)
    with pytest.raises(ValueError, match="imputed_ridge_from_rna"):
        predict_unmeasured(st, rna, msi, metrics, table, params, seed=0)


def test_a_fit_worker_killed_is_a_clear_memory_error_not_a_hang():
    """A worker process that dies (the kernel's out-of-memory killer) ends the stage with an
    error that says what to change, instead of the pool's bare BrokenProcessPool."""
    import os
    import signal

    from spatialfuse.impute.fitpool import FoldFits
    from spatialfuse.impute.stage import _model_params

    rna, msi = _paired_synthetic()
    test = np.arange(rna.n_obs) % 2 == 0
    params = _model_params(["vae"], {}, 200, 1.0)["vae"]
    jobs = [dict(name="vae", train=~test, test=test, params=params, seed=0)] * 2
    with FoldFits(rna, msi, workers=2) as fits:
        results = fits.map(jobs)
        for pid in list(fits._pool._processes):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(MemoryError, match=r"--set-threads impute=1"):
            results.take("vae", test)


def test_a_failing_stage_stops_its_running_fits():
    """The fits are submitted when the stage starts; if the stage fails meanwhile, its error
    must not wait for them (minutes each at HD sizes): the workers are stopped at once."""
    import signal

    from spatialfuse.impute.fitpool import FoldFits
    from spatialfuse.impute.stage import _model_params

    rna, msi = _paired_synthetic()
    test = np.arange(rna.n_obs) % 2 == 0
    # long enough to be running when the stage fails, short enough that a pool left to
    # finish them (the old behaviour) ends in minutes with exit code 0 and fails the test
    params = {**_model_params(["vae"], {}, 3_000, 1.0)["vae"], "max_epochs": 100_000,
              "patience": 100_000}
    jobs = [dict(name="vae", train=~test, test=test, params=params, seed=0)] * 2
    with pytest.raises(ValueError, match="the stage failed"):
        with FoldFits(rna, msi, workers=2) as fits:
            fits.map(jobs)
            procs = list(fits._pool._processes.values())
            raise ValueError("the stage failed")
    assert procs and all(p.exitcode == -signal.SIGTERM for p in procs)
    assert fits._folder is None  # the inputs' copies removed


def test_stopping_the_workers_uses_the_public_method_where_python_has_one():
    """Python 3.14's ``ProcessPoolExecutor.terminate_workers`` is used where it exists; the
    private process table only before it."""
    from types import SimpleNamespace

    from spatialfuse.impute.fitpool import _terminate_workers

    calls = []
    proc = SimpleNamespace(terminate=lambda: calls.append("private"))
    _terminate_workers(SimpleNamespace(terminate_workers=lambda: calls.append("public"),
                                       _processes={1: proc}))
    assert calls == ["public"]
    _terminate_workers(SimpleNamespace(_processes={1: proc, 2: proc}))
    assert calls == ["public", "private", "private"]
    _terminate_workers(SimpleNamespace(_processes=None))  # a pool that never started a worker
    assert calls == ["public", "private", "private"]


def test_fit_results_out_of_step_fail_loudly():
    """The stage submits the fits of both CVs at its start and takes each result where it
    uses it; taking a result for another model or fold than the next job is a bug that must
    stop the stage, not hand it another fold's predictions."""
    from spatialfuse.impute.fitpool import FoldFits
    from spatialfuse.impute.stage import _model_params

    rna, msi = _paired_synthetic()
    test = np.arange(rna.n_obs) % 2 == 0
    params = _model_params(["vae"], {}, 5, 1.0)["vae"]
    jobs = [dict(name="vae", train=~test, test=test, params=params, seed=0),
            dict(name="vae", train=test, test=~test, params=params, seed=0)]
    with FoldFits(rna, msi, workers=1) as fits:
        results = fits.map(jobs)
        with pytest.raises(RuntimeError, match="out of step: expected a gnn fit"):
            results.take("gnn", test)
    with FoldFits(rna, msi, workers=1) as fits:
        results = fits.map(jobs)
        with pytest.raises(RuntimeError, match="out of step"):
            results.take("vae", ~test)  # the second job's fold, asked for first
    with FoldFits(rna, msi, workers=1) as fits:
        results = fits.map(jobs)
        out, genes, _ = results.take("vae", test)
        assert out["msi"].shape == (int(test.sum()), msi.n_vars)
        results.take("vae", ~test)
        with pytest.raises(RuntimeError, match="the next submitted is none"):
            results.take("vae", test)


def test_pooled_verdicts_pool_each_samples_chosen_pair_within_samples():
    from spatialfuse.impute.pooled import pooled_verdicts

    rng = np.random.default_rng(0)

    def sample(n, lead, method, clusters=True):
        base = rng.normal(0.2, 0.1, n)
        t = pd.DataFrame({"task": "rna_to_msi", "feature": [f"f{i}" for i in range(n)] * 4,
                          "method": np.repeat(["ridge_from_rna", f"{method}_from_rna",
                                               "location", "location_kriging"], n),
                          "pearson_r": np.r_[base, base + lead + rng.normal(0, 0.01, n),
                                             base - 0.1, base - 0.3],
                          "pearson_r_block": np.r_[base, base, base, base]})
        if clusters:  # one cluster per sample: all its features move together
            t["cluster"] = 0
        return t

    scores = {"a": sample(40, 0.05, "vae"), "b": sample(60, 0.05, "gnn", clusters=False),
              "c": sample(30, 0.05, "vae")}

    def cm(method, with_location=True, reference="location"):
        out = {"model_vs_baselines": {"method": method, "baseline": "ridge", "verdict": "tie"},
               "model_vs_baselines_block": {"method": method, "baseline": "ridge"}}
        if with_location:
            out["baseline_vs_location"] = {"method": "ridge", "reference": reference}
            out["baseline_vs_location_block"] = {"method": "ridge",
                                                 "reference": "location_kriging"}
        return {"crossmodal": {"rna_to_msi": out}}

    metrics = {"a": cm("vae"), "b": cm("gnn"), "c": cm("vae", with_location=False)}
    pv = pooled_verdicts(metrics, scores).set_index(["comparison", "score"])
    row = pv.loc[("model_vs_baselines", "pooled")]
    assert row["samples"] == 3 and row["method"] == "vae (2), gnn" and row["comparator"] == "ridge (3)"
    assert row["n_features"] == 130 and row["verdict"] == "better"
    # ... where each sample alone said tie: the row keeps the samples' own verdicts
    assert row["sample_verdicts"] == "tie (3)"
    assert pv.loc[("model_vs_baselines", "within blocks"), "sample_verdicts"] == "n/a (3)"
    # a's and c's features are one cluster each, b's have none: each its own
    assert row["n_clusters"] == 1 + 60 + 1
    assert abs(row["difference"] - 0.05) < 0.01
    # within blocks the methods are equal feature by feature: no lead
    assert pv.loc[("model_vs_baselines", "within blocks"), "difference"] == 0
    assert pv.loc[("model_vs_baselines", "within blocks"), "verdict"] == "tie"
    # the location reference is read under its own name; c has no such comparison
    loc = pv.loc[("baseline_vs_location", "pooled")]
    assert loc["samples"] == 2 and loc["comparator"] == "location (2)"
    assert np.isclose(loc["difference"], 0.1) and loc["verdict"] == "better"
    # each sample's own reference, whichever of the two it was set against on that score
    assert pv.loc[("baseline_vs_location", "within blocks"), "comparator"] == "location_kriging (2)"
    assert pv.loc[("baseline_vs_location", "within blocks"), "difference"] == 0
    metrics["b"] = cm("gnn", reference="location_kriging")
    loc = pooled_verdicts(metrics, scores).set_index(["comparison", "score"]).loc[
        ("baseline_vs_location", "pooled")]
    assert loc["comparator"] == "location, location_kriging"
    assert 0.1 < loc["difference"] < 0.3
    assert ("decoder_vs_baselines", "pooled") not in pv.index
