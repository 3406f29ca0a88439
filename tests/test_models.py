"""Joint models (VAE, GNN, Transformer): determinism, domain recovery, held-out spots, likelihoods,
batch covariate, mini-batch memory. Small fixtures, few epochs: behaviour, not speed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialfuse.align import run_align

REPO = Path(__file__).resolve().parents[1]

NEURAL = ("vae", "gnn", "transformer")
FAST = {"max_epochs": 6, "patience": 100}


@pytest.fixture(scope="module")
def paired(small_ingested, small_demo_files):
    out = run_align(small_ingested["st"], small_ingested["msi"], {}, sample="s",
                    truth_dir=small_demo_files[2])
    return out["rna"], out["msi_spots"]


@pytest.fixture(scope="module")
def inputs(paired):
    from spatialfuse.models import prepare_inputs

    return prepare_inputs(*paired)


@pytest.mark.parametrize("name", NEURAL)
def test_same_seed_same_embedding(inputs, name):
    from spatialfuse.models.api import DEFAULTS, fit

    a = fit(name, inputs, FAST, seed=3, device="cpu").embed()
    b = fit(name, inputs, FAST, seed=3, device="cpu").embed()
    c = fit(name, inputs, FAST, seed=4, device="cpu").embed()
    assert a.shape == (inputs.n_spots, DEFAULTS[name]["latent_dim"]) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", NEURAL)
def test_domains_recovered(paired, small_demo_files, name):
    """Every model's embedding separates the simulated domains (k-means, no refinement)."""
    from spatialfuse.domains import domain_metrics, find_domains
    from spatialfuse.ingest import read_truth_domains
    from spatialfuse.models import run_model

    rna, msi = paired
    out = run_model(name, rna, msi, {"max_epochs": 40}, seed=0, device="cpu")
    xy = rna.obsm["spatial"]
    lab = find_domains(out["embedding"], xy, n_domains=4, refine=False, seed=0)
    truth = read_truth_domains(small_demo_files[2], rna.obs_names)
    assert domain_metrics(lab, xy, truth)["ari"] > 0.8
    # the training contract
    log = out["train_log"]
    assert {"epoch", "loss", "val_loss", "seconds"} <= set(log.columns) and len(log) >= 1
    assert out["metrics"]["best_epoch"] >= 1 and out["metrics"]["seconds"] > 0
    assert out["checkpoint"]["state_dict"] and out["checkpoint"]["model"] == name


@pytest.mark.parametrize("name", NEURAL)
def test_held_out_spots_never_seen(inputs, name):
    """Changing the held-out spots' data (both modalities) changes nothing the model learned,
    nor the predictions of their held-out modality."""
    from spatialfuse.models.api import fit

    rng = np.random.default_rng(0)
    held = rng.random(inputs.n_spots) < 0.25
    noisy = replace(inputs, rna=inputs.rna.copy(), msi=inputs.msi.copy(),
                    rna_counts=inputs.rna_counts.copy())
    noisy.rna[held] = rng.normal(size=noisy.rna[held].shape).astype(np.float32)
    noisy.msi[held] = rng.normal(size=noisy.msi[held].shape).astype(np.float32)
    noisy.rna_counts[held] = rng.poisson(3, noisy.rna_counts[held].shape)
    a = fit(name, inputs, FAST, seed=0, device="cpu", train_mask=~held)
    b = fit(name, noisy, FAST, seed=0, device="cpu", train_mask=~held)
    sa, sb = a.module.state_dict(), b.module.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    # MSI of held-out spots predicted from RNA: their own MSI is never read
    only_msi = replace(inputs, msi=inputs.msi.copy())
    only_msi.msi[held] = 0.0
    c = fit(name, only_msi, FAST, seed=0, device="cpu", train_mask=~held)
    np.testing.assert_array_equal(a.predict_msi_from_rna(held), c.predict_msi_from_rna(held))
    assert a.predict_msi_from_rna().shape == (held.sum(), inputs.msi.shape[1])


@pytest.mark.parametrize("name", NEURAL)
def test_metabolites_alone_are_predicted_exactly_as_next_to_the_genes(inputs, name):
    """Genes → metabolites skips the genes' expected log1p (most of a prediction's cost at
    Visium HD sizes): its MSI equals the MSI of the prediction of both, bit for bit."""
    from spatialfuse.models.api import fit

    held = np.random.default_rng(1).random(inputs.n_spots) < 0.3
    fm = fit(name, inputs, {**FAST, "max_epochs": 2}, seed=0, device="cpu", train_mask=~held)
    idx = np.flatnonzero(held)
    vis = torch.ones((inputs.n_spots, 2), dtype=torch.bool)
    vis[:, 1] = torch.as_tensor(~held)
    both, alone = fm._run(idx, vis, "predict"), fm._run(idx, vis, "predict_msi")
    assert len(both) == 2 and len(alone) == 1
    np.testing.assert_array_equal(alone[0], both[1])
    np.testing.assert_array_equal(fm.predict_msi_from_rna(held), both[1].astype(np.float32))


@pytest.mark.parametrize("name", NEURAL)
def test_embed_from_one_modality_reads_only_it(inputs, name):
    """``embed_from("msi")`` (the latent the cross-modal hybrids read) does not change when
    every gene value is replaced, while the joint embedding does."""
    from spatialfuse.models.api import fit

    fm = fit(name, inputs, {**FAST, "max_epochs": 2}, seed=0, device="cpu")
    z_msi, z_joint = fm.embed_from("msi"), fm.embed()
    rng = np.random.default_rng(5)
    # new tensors, not in place: the fitted data may share memory with the fixture's arrays
    fm.data.x["rna"] = torch.as_tensor(rng.normal(size=tuple(fm.data.x["rna"].shape)),
                                       dtype=torch.float32)
    fm.data.rna = torch.as_tensor(rng.normal(size=tuple(fm.data.rna.shape)), dtype=torch.float32)
    np.testing.assert_array_equal(fm.embed_from("msi"), z_msi)
    assert not np.array_equal(fm.embed(), z_joint)
    assert fm.embed_from("rna", np.arange(5)).shape == (5, z_msi.shape[1])
    with pytest.raises(ValueError, match="source"):
        fm.embed_from("atac")


@pytest.mark.parametrize("name", NEURAL)
def test_modality_weights_scale_their_terms(inputs, name):
    """The objective is rna_weight · NLL(genes) + msi_weight · NLL(metabolites) + KL term, for
    every family; the default weighs the metabolites at half (their spot values are a blur of the
    coarser, registered MSI raster: see the README, Joint models)."""
    from spatialfuse.models.api import DEFAULTS, fit

    assert DEFAULTS[name]["msi_weight"] < DEFAULTS[name]["rna_weight"]
    fm = fit(name, inputs, {**FAST, "max_epochs": 1}, seed=0, device="cpu")
    batch = next(iter(fm.batcher.batches(np.arange(inputs.n_spots), None,
                                         fm.data.base_visible, train=False)))
    fm.module.eval()
    with torch.no_grad():
        for w_rna, w_msi in ((1.0, 1.0), (2.0, 0.25)):
            fm.module.w_rna, fm.module.w_msi = w_rna, w_msi
            t = fm.module.loss(batch)
            kl = fm.module.kl_weight * t["kl"] if "kl" in t else 0.0
            torch.testing.assert_close(t["loss"], w_rna * t["nll_rna"] + w_msi * t["nll_msi"] + kl)
        assert t["nll_msi"] != 0 and t["nll_rna"] != 0


def test_vae_predicts_missing_modality(inputs):
    """With one modality missing, the product of experts still encodes the spot: MSI predicted
    from RNA on held-out spots correlates with the truth."""
    from spatialfuse.models.api import fit

    held = np.random.default_rng(1).random(inputs.n_spots) < 0.3
    fm = fit("vae", inputs, {"max_epochs": 60}, seed=0, device="cpu", train_mask=~held)
    pred = fm.predict_msi_from_rna(held)
    obs = inputs.msi[held]
    r = [np.corrcoef(pred[:, j], obs[:, j])[0, 1] for j in range(obs.shape[1]) if obs[:, j].std() > 0]
    assert np.nanmedian(r) > 0.3
    back = inputs.to_lognormal("msi", pred)
    assert back.shape == pred.shape and np.isfinite(back).all()


def test_zero_inflated_likelihoods():
    """ZINB puts more mass on zeros than NB as pi grows; the zero-inflated MSI hurdle rewards
    predicting a missing peak where it is missing."""
    from spatialfuse.models.modules import ModalityDecoders, nb_log_prob

    x = torch.tensor([[0.0, 5.0]])
    mu, theta = torch.tensor([[5.0, 5.0]]), torch.tensor([2.0, 2.0])
    nb = nb_log_prob(x, mu, theta)
    assert torch.allclose(torch.exp(nb).sum(), torch.exp(nb).sum())  # finite
    torch.manual_seed(0)
    dec = ModalityDecoders(4, 8, 2, 2, rna_nb=True, rna_zi=True, msi_zi=True)
    z, b = torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for net in (dec.rna_net, dec.msi_net):
            net[-1].bias[2:] = 4.0  # dropout logits high: pi ≈ 0.98
    msi, zero = torch.tensor([[0.5, -1.0]]), torch.tensor([[False, True]])
    lp_r, lp_m = dec.log_prob(z, b, x, torch.tensor([10.0]), msi, zero)
    lp_r0, _ = dec.log_prob(z, b, torch.zeros_like(x), torch.tensor([10.0]), msi, zero)
    assert lp_r0 > lp_r  # zeros are likely under heavy zero inflation
    _, lp_m_all_zero = dec.log_prob(z, b, x, torch.tensor([10.0]), msi, torch.ones_like(zero))
    assert lp_m_all_zero > lp_m


@pytest.mark.parametrize("lik", [("zinb", "zig"), ("gaussian", "gaussian")])
def test_likelihood_options_fit(inputs, lik):
    from spatialfuse.models.api import fit

    fm = fit("vae", inputs, {**FAST, "rna_likelihood": lik[0], "msi_likelihood": lik[1]},
             seed=0, device="cpu")
    assert fm.metrics["rna_likelihood"] == lik[0] and fm.metrics["msi_likelihood"] == lik[1]
    assert np.isfinite(fm.train_log["loss"]).all()
    assert np.isfinite(fm.predict_rna_from_msi(np.arange(10))).all()
    with pytest.raises(ValueError, match="rna_likelihood"):
        fit("vae", inputs, {"rna_likelihood": "poisson"}, seed=0, device="cpu")


def test_batch_covariate_two_samples(inputs):
    from spatialfuse.models.api import DEFAULTS, fit
    from spatialfuse.models.data import concat_inputs

    both = concat_inputs([inputs, inputs], ["a", "b"])
    assert both.n_batches == 2 and both.n_spots == 2 * inputs.n_spots
    for name in NEURAL:
        fm = fit(name, both, {"max_epochs": 2}, seed=0, device="cpu")
        assert fm.embed().shape == (both.n_spots, DEFAULTS[name]["latent_dim"])
    assert fm.module.decoders.n_batches == 2


def test_gnn_batches_have_bounded_size():
    """Graph partitions: a mini-batch's nodes (targets + halo) do not grow with the number of
    spots, so training memory is linear in observations."""
    from spatialfuse.models.batching import FitData, TileBatcher
    from spatialfuse.models.data import ModelInputs

    sizes = {}
    for side in (30, 90):
        g = np.arange(side) * 100.0
        xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        n = len(xy)
        rng = np.random.default_rng(0)
        inp = ModelInputs(rna=rng.normal(size=(n, 5)).astype(np.float32),
                          msi=rng.normal(size=(n, 4)).astype(np.float32), rna_counts=None, xy=xy,
                          obs_names=[str(i) for i in range(n)], rna_features=list("abcde"),
                          msi_features=list("wxyz"))
        data = FitData(inp, np.ones(n, bool), n_pcs=3, k=6, rna_nb=False, seed=0, device="cpu")
        tb = TileBatcher(data, 128, 0.5, n_layers=2, k=6)
        batches = list(tb.batches(np.arange(n), rng, data.base_visible, train=True))
        assert np.array_equal(np.sort(np.concatenate([b.targets for b in batches])), np.arange(n))
        sizes[n] = max(len(b.nodes) for b in batches)
    assert sizes[8100] < 2 * sizes[900] and sizes[8100] < 4 * 128  # 9× the spots


def test_schema_defaults_match_code():
    """The config schema documents exactly the parameters each model takes, with its defaults."""
    import yaml

    from spatialfuse.models.api import DEFAULTS

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["model"]["properties"]
    assert set(props["models"]["items"]["enum"]) == {"pca", *DEFAULTS}
    for name, defaults in DEFAULTS.items():
        fields = props[name]["properties"]
        assert set(fields) == set(defaults), name
        assert {k: f["default"] for k, f in fields.items()} == defaults, name


def test_impute_fits_keep_the_metabolite_decoder_at_full_weight():
    """The models' msi_weight default (0.5) is for domain finding; the impute stage's per-fold
    fits predict metabolites and override it (``impute.msi_weight``, default 1.0; null keeps
    the model's own)."""
    from spatialfuse.impute.stage import DEFAULTS as IMPUTE, _model_params
    from spatialfuse.models.api import DEFAULTS

    sections = {n: dict(DEFAULTS[n]) for n in NEURAL}
    p = _model_params(NEURAL, sections, 200, 0.1, msi_weight=IMPUTE["msi_weight"])
    assert all(p[n]["msi_weight"] == 1.0 for n in NEURAL)
    kept = _model_params(NEURAL, sections, 200, 0.1, msi_weight=None)
    assert all(kept[n]["msi_weight"] == DEFAULTS[n]["msi_weight"] == 0.5 for n in NEURAL)


def test_size_factors_are_read_off_the_counts_and_a_spot_without_counts_gets_the_median():
    import warnings

    from spatialfuse.models.data import _size_factors

    counts = np.array([[4.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 9.0], [1.0, 1.0, 1.0]])
    f_true = np.array([0.5, np.nan, 0.25, 2.0])
    lognorm = np.log1p(counts * np.nan_to_num(f_true)[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the all-zero spot must not warn (it is expected)
        f = _size_factors(lognorm, counts)
    assert f == pytest.approx([0.5, 0.5, 0.25, 2.0])  # the empty spot: the median of the others


def test_fits_take_the_batch_size_and_steps_the_job_cost_model_counts(inputs):
    """The Snakefile sizes an impute job's runtime with spatialfuse.fitsize (torch-free); the
    fits batch by the same rule, so an epoch takes the steps the request counts."""
    from spatialfuse.fitsize import MIN_BATCH, fit_batch_size, steps_per_epoch
    from spatialfuse.models.api import DEFAULTS, fit

    assert fit_batch_size(10_000, 128) == 128  # large sections: the configured batch
    assert fit_batch_size(400, 128) == 50  # small ones: 8 steps per epoch
    assert fit_batch_size(20, 128) == MIN_BATCH
    fm = fit("vae", inputs, {**FAST, "max_epochs": 2}, seed=0, device="cpu")
    n_tr = int(inputs.n_spots * (1 - DEFAULTS["vae"]["val_fraction"]))
    bs = fit_batch_size(n_tr, DEFAULTS["vae"]["batch_size"])
    assert fm.batcher.batch_size == bs < DEFAULTS["vae"]["batch_size"]
    assert fm.metrics["steps"] == 2 * steps_per_epoch(n_tr, bs)
