"""SAE architectures and metrics against closed forms (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neurodecode
from neurodecode.analysis.sae.core import (
    SAE_REGISTRY,
    SparseAutoencoder,
    create_sae,
    geometric_median,
)
from neurodecode.analysis.sae.jumprelu import heaviside_step, jumprelu
from neurodecode.analysis.sae.metrics import (
    ReconstructionMetrics,
    downstream_drop,
    evaluate_reconstruction,
    feature_density_histogram,
    fraction_of_variance_unexplained,
    relative_reconstruction_bias,
)
from neurodecode.analysis.sae.planted import dictionary_recovery, make_planted_activations
from neurodecode.validation import InvalidInputError

ARCHITECTURES = ("relu_l1", "topk", "batchtopk", "jumprelu", "gated")


def test_registry_holds_every_architecture_and_rejects_unknown_names():
    assert set(ARCHITECTURES) <= set(SAE_REGISTRY)
    with pytest.raises(InvalidInputError, match="architecture='topkk'"):
        create_sae("topkk", 8, 16)
    with pytest.raises(InvalidInputError, match=r"unknown keys \['kk'\]"):
        create_sae("topk", 8, 16, kk=3)
    with pytest.raises(InvalidInputError, match="transcoder"):
        create_sae("topk", 8, 16, skip_connection=True)


# --- relative reconstruction bias --------------------------------------------------------------
def test_shrinkage_one_dimensional_closed_form():
    gamma = relative_reconstruction_bias(np.array([[1.0]]), np.array([[0.5]]))
    assert gamma["gamma_rescale_reconstruction"] == pytest.approx(0.5)
    assert gamma["gamma_rescale_input"] == pytest.approx(0.5)


def test_shrinkage_forms_differ_and_each_is_the_optimal_rescaling_of_its_side():
    # x = (1, 0), x̂ = (½, ½): E‖x̂‖²/E[x·x̂] = ½/½ = 1; E[x·x̂]/E‖x‖² = ½/1 = ½
    gamma = relative_reconstruction_bias(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
    assert gamma["gamma_rescale_reconstruction"] == pytest.approx(1.0)
    assert gamma["gamma_rescale_input"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    x_hat = 0.7 * x + 0.3 * rng.normal(size=(50, 4))
    gamma = relative_reconstruction_bias(x, x_hat)
    grid = np.linspace(0.3, 2.0, 17001)
    err_rescale_hat = [((x_hat / g - x) ** 2).sum() for g in grid]
    err_rescale_x = [((g * x - x_hat) ** 2).sum() for g in grid]
    assert grid[np.argmin(err_rescale_hat)] == pytest.approx(
        gamma["gamma_rescale_reconstruction"], abs=2e-4
    )
    assert grid[np.argmin(err_rescale_x)] == pytest.approx(gamma["gamma_rescale_input"], abs=2e-4)


# --- FVU and latent statistics -----------------------------------------------------------------
def test_fvu_matches_hand_computation_and_batched_accumulation():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    x_hat = np.array([[1.0, 3.0], [2.0, 4.0], [5.0, 7.0]])
    # SSE = 1 + 1 + 4 = 6; means (3, 5); SST = (4+0+4) + (9+1+16) = 34
    assert fraction_of_variance_unexplained(x, x_hat) == pytest.approx(6 / 34)
    metrics = ReconstructionMetrics()
    for i in range(3):
        metrics.update(x[i : i + 1], x_hat[i : i + 1])
    assert metrics.compute()["fvu"] == pytest.approx(6 / 34, rel=1e-12)


def test_fvu_accumulates_in_float64_with_a_large_offset():
    rng = np.random.default_rng(1)
    x = (1e4 + rng.normal(size=(4000, 3))).astype(np.float32)
    x_hat = x + np.float32(0.1) * rng.normal(size=x.shape).astype(np.float32)
    exact = ((x.astype(np.float64) - x_hat) ** 2).sum() / (
        (x.astype(np.float64) - x.astype(np.float64).mean(0)) ** 2
    ).sum()
    metrics = ReconstructionMetrics()
    for start in range(0, 4000, 128):
        metrics.update(torch.from_numpy(x[start : start + 128]), x_hat[start : start + 128])
    assert metrics.compute()["fvu"] == pytest.approx(exact, rel=1e-9)


def test_latent_statistics_l0_dead_dense_and_histogram():
    latents = np.zeros((10, 4))
    latents[:, 0] = 1.0  # fires on every row: dense
    latents[:2, 1] = 0.5  # 20 %: dense at threshold 0.1
    latents[0, 2] = 0.1  # 10 %: not dense (strictly above the threshold counts)
    metrics = ReconstructionMetrics(n_latents=4, dense_threshold=0.1)
    x = np.random.default_rng(0).normal(size=(10, 3))
    metrics.update(x, x, latents)
    out = metrics.compute()
    assert out["l0"] == pytest.approx((10 + 2 + 1) / 10)
    assert out["dead_fraction"] == pytest.approx(0.25)
    assert out["dense_fraction"] == pytest.approx(0.5)
    assert out["fvu"] == 0.0
    hist = out["density_histogram"]
    assert hist["dead"] == 1 and sum(hist["counts"]) == 3
    assert feature_density_histogram(np.array([0.0, 0.0]))["dead"] == 2


def test_downstream_drop_reports_both_scores():
    acts = np.ones((5, 2))
    recon = 0.5 * acts
    out = downstream_drop(lambda a: float(np.mean(a)), acts, recon)
    assert out == {"original": 1.0, "reconstructed": 0.5, "drop": 0.5}


# --- geometric median and initialisation --------------------------------------------------------
def test_geometric_median_known_cases():
    # a triangle with an angle >= 120 degrees at the origin: the Fermat point is that vertex
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.1], [-1.0, 0.1]])
    assert torch.allclose(geometric_median(triangle), torch.zeros(2), atol=1e-4)
    assert not torch.allclose(triangle.mean(0), torch.zeros(2), atol=1e-2)
    # in one dimension (odd count) it is the median, not the mean
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert geometric_median(line).item() == pytest.approx(2.0, abs=1e-3)


def test_initialisation_sets_b_dec_scale_and_encoder_as_decoder_transpose():
    sae = create_sae("topk", 2, 6, k=2)
    # TopK's tied encoder starts with entries of RMS 1/64: scale sqrt(d_in) / 64
    assert sae.encoder_init_scale == pytest.approx(np.sqrt(2) / 64)
    assert torch.allclose(sae.W_enc, sae.encoder_init_scale * sae.W_dec.T)
    assert create_sae("topk", 8192, 4, k=2).encoder_init_scale == 1.0  # at most 1
    unit = create_sae("relu_l1", 2, 6)  # no rule: the plain transpose
    assert torch.allclose(unit.W_enc, unit.W_dec.T)
    chosen = create_sae("topk", 2, 6, k=2, encoder_init_scale=0.5)
    assert torch.allclose(chosen.W_enc, 0.5 * chosen.W_dec.T)
    assert create_sae(**chosen.config()).encoder_init_scale == 0.5  # saved with the config
    with pytest.raises(InvalidInputError, match="encoder_init_scale"):
        create_sae("topk", 2, 6, k=2, encoder_init_scale=0.0)
    assert torch.allclose(sae.decoder_norms(), torch.ones(6))
    points = torch.tensor([[0.0, 0.0], [1.0, 0.1], [-1.0, 0.1]])
    sae.initialize_from_sample(points)
    scale = float(np.sqrt(2 / (points**2).sum(1).mean()))
    assert sae.input_scale.item() == pytest.approx(scale, rel=1e-6)
    assert torch.allclose(sae.b_dec, torch.zeros(2), atol=1e-4)  # median of the scaled points
    unscaled = create_sae("relu_l1", 1, 2, normalize_activations=False)
    unscaled.initialize_from_sample(torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]]))
    assert unscaled.b_dec.item() == pytest.approx(2.0, abs=1e-3)
    assert unscaled.input_scale.item() == 1.0


# --- architecture-specific gradients ------------------------------------------------------------
def test_jumprelu_straight_through_gradient_is_the_rectangle_kernel():
    eps = 0.1
    theta = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5], requires_grad=True)
    pre = torch.tensor([0.3, 0.47, 0.53, 0.56, 0.9], requires_grad=True)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (weights * jumprelu(pre, theta, eps)).sum().backward()
    inside = ((pre - theta) / eps).abs() < 0.5  # [F, T, T, F, F]
    assert inside.tolist() == [False, True, True, False, False]
    expected_theta = -(theta / eps) * inside.float() * weights
    assert torch.allclose(theta.grad, expected_theta.detach())
    assert torch.allclose(pre.grad, weights * (pre > theta).float())
    assert jumprelu(pre, theta, eps).tolist() == pytest.approx([0.0, 0.0, 0.53, 0.56, 0.9])
    theta.grad, pre.grad = None, None
    (weights * heaviside_step(pre, theta, eps)).sum().backward()
    assert torch.allclose(theta.grad, -(1 / eps) * inside.float() * weights)
    assert torch.count_nonzero(pre.grad) == 0


@pytest.mark.parametrize("transcoder", [False, True])
def test_gated_auxiliary_term_gives_no_gradient_to_the_decoder(transcoder):
    torch.manual_seed(0)
    kwargs = {"transcoder": True, "skip_connection": True} if transcoder else {}
    sae = create_sae("gated", 6, 12, **kwargs)
    with torch.no_grad():
        sae.b_enc.fill_(0.2)
    x = torch.randn(16, 6)
    target = torch.randn(16, 6) if transcoder else x
    pre = sae.pre_activations(x)
    sae.frozen_decoder_loss(x, target, pre).backward()
    assert sae.W_dec.grad is None or torch.count_nonzero(sae.W_dec.grad) == 0
    if transcoder:  # b_dec enters only through the (frozen) decoder
        assert sae.b_dec.grad is None or torch.count_nonzero(sae.b_dec.grad) == 0
        assert sae.W_skip.grad is None or torch.count_nonzero(sae.W_skip.grad) == 0
    assert torch.count_nonzero(sae.W_enc.grad) > 0  # the gate is trained
    assert torch.count_nonzero(sae.b_enc.grad) > 0
    # ... while the full loss does reach the decoder
    sae.zero_grad()
    sae.training_loss(x, target if transcoder else None)["loss"].backward()
    assert torch.count_nonzero(sae.W_dec.grad) > 0


def test_auxk_target_is_the_residual_with_b_dec_added_once():
    torch.manual_seed(0)
    sae = create_sae("topk", 8, 32, k=2, k_aux=4, dead_window=1)
    with torch.no_grad():
        sae.b_dec.fill_(3.0)  # a large bias makes a double count visible
        sae.rows_since_fired.fill_(10)  # everything dead
    x = torch.randn(5, 8)
    residual, aux = sae.auxk_terms(x)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    values, index = pre.topk(2, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, index, values.relu())
    assert torch.allclose(residual, x - (z @ sae.W_dec + sae.b_dec), atol=1e-5)
    values_aux, index_aux = pre.topk(4, dim=-1)
    z_aux = torch.zeros_like(pre).scatter(-1, index_aux, values_aux.relu())
    assert torch.allclose(aux, z_aux @ sae.W_dec, atol=1e-5)  # no b_dec in the aux decode
    # only dead latents take part
    with torch.no_grad():
        sae.rows_since_fired.zero_()
        sae.rows_since_fired[:3] = 10
    _, aux = sae.auxk_terms(x)
    values_dead, index_dead = pre[:, :3].topk(3, dim=-1)
    z_dead = torch.zeros(5, 3).scatter(-1, index_dead, values_dead.relu())
    assert torch.allclose(aux, z_dead @ sae.W_dec[:3], atol=1e-5)
    sae.rows_since_fired.zero_()
    assert sae.auxk_terms(x) == (None, None)


def test_decoder_gradient_projection_removes_the_parallel_component():
    sae = create_sae("relu_l1", 4, 8)
    sae.W_dec.grad = torch.randn(8, 4)
    sae.remove_parallel_decoder_grad()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(8), atol=1e-6)


def test_batchtopk_keeps_k_per_row_on_average_and_estimates_a_threshold():
    torch.manual_seed(0)
    sae = create_sae("batchtopk", 8, 32, k=3)
    pre = torch.randn(10, 32)
    z = sae.training_latents(pre)
    assert int((z > 0).sum()) == 30
    kept_min = z[z > 0].min()
    assert sae.threshold.item() == pytest.approx(kept_min.item())
    inference = sae.activate(pre)
    assert torch.equal(inference > 0, pre > kept_min)


# --- persistence --------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_load_round_trip(tmp_path, architecture):
    torch.manual_seed(1)
    kwargs = {"transcoder": True, "d_out": 5, "skip_connection": True}
    sae = create_sae(architecture, 6, 10, **kwargs)
    x, y = torch.randn(40, 6), torch.randn(40, 5)
    sae.initialize_from_sample(x, y)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sae.training_loss(x, y)  # BatchTopK estimates its threshold
    sae.eval()
    folder = sae.save_pretrained(tmp_path / architecture)
    config = json.loads((folder / "config.json").read_text())
    assert config["init_args"]["architecture"] == architecture
    assert config["init_args"]["d_out"] == 5
    assert (folder / "model.safetensors").is_file()
    loaded = SparseAutoencoder.from_pretrained(folder).eval()
    assert type(loaded) is type(sae)
    assert type(neurodecode.load_pretrained(folder)) is type(sae)  # the one model-folder format
    for name, value in sae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert torch.equal(sae(x).output, loaded(x).output)


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(InvalidInputError, match="expected a directory"):
        SparseAutoencoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"config\.json"):
        SparseAutoencoder.from_pretrained(tmp_path / "empty")


# --- planted data -------------------------------------------------------------------------------
def test_planted_activations_are_sparse_combinations_of_unit_atoms():
    planted = make_planted_activations(200, d=8, n_atoms=20, n_active=3, d_out=5, seed=2)
    assert np.allclose(np.linalg.norm(planted.atoms, axis=1), 1, atol=1e-6)
    assert ((planted.codes > 0).sum(1) == 3).all()
    assert np.allclose(planted.inputs, planted.codes @ planted.atoms, atol=1e-5)
    assert np.allclose(planted.targets, planted.codes @ planted.output_atoms, atol=1e-5)
    assert dictionary_recovery(planted.atoms, planted.atoms[::-1]) == 1.0
    assert dictionary_recovery(planted.atoms, -planted.atoms) == 0.0


def test_evaluate_reconstruction_on_a_perfect_transcoder_pair():
    sae = create_sae("topk", 4, 4, k=4, transcoder=True, normalize_activations=False)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
    x = torch.rand(32, 4) + 0.1  # positive: ReLU keeps all
    out = evaluate_reconstruction(sae, [(x[:16], x[:16]), (x[16:], x[16:])])
    assert out["fvu"] == pytest.approx(0.0, abs=1e-10)
    assert out["l0"] == pytest.approx(4.0)
    assert out["gamma_rescale_input"] == pytest.approx(1.0)


@pytest.mark.parametrize("transcoder", [False, True])
def test_topk_sparse_training_path_equals_the_dense_one(transcoder):
    import copy

    torch.manual_seed(0)
    kwargs = {"transcoder": True, "skip_connection": True} if transcoder else {}
    sparse = create_sae("topk", 16, 64, k=4, k_aux=6, dead_window=1, **kwargs)
    x, y = torch.randn(32, 16), torch.randn(32, 16)
    target = y if transcoder else None
    sparse.initialize_from_sample(x, target)
    with torch.no_grad():
        for p in sparse.parameters():
            p.add_(0.05 * torch.randn_like(p))
        sparse.rows_since_fired[:20] = 5  # 20 dead latents: AuxK is active
    dense = copy.deepcopy(sparse)
    got = sparse.training_loss(x, target)
    want = dense.dense_training_loss(x, target)
    assert float(got["auxiliary"]) > 0
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5, abs=1e-7), key
    got["loss"].backward()
    want["loss"].backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    assert torch.equal(sparse.rows_since_fired, dense.rows_since_fired)
