"""Matryoshka BatchTopK, Switch and ProLU SAEs and the feature-suppression fix: closed forms and
hand-computed cases, and short Lightning runs on a planted dictionary."""

from __future__ import annotations

import copy

import pytest
import torch

import neurodecode
from neurodecode.analysis.sae.core import SAE_REGISTRY, create_sae
from neurodecode.analysis.sae.matryoshka import prefix_reconstruction
from neurodecode.analysis.sae.metrics import (
    evaluate_reconstruction,
    fraction_of_variance_unexplained,
)
from neurodecode.analysis.sae.planted import dictionary_recovery, make_planted_activations
from neurodecode.analysis.sae.prolu import prolu
from neurodecode.analysis.sae.suppression import fix_feature_suppression, optimal_latent_scales
from neurodecode.analysis.sae.switch import topk_forward_flops
from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae
from neurodecode.validation import InvalidInputError

NEW = ("matryoshka_batchtopk", "switch", "prolu")


@pytest.fixture(scope="module")
def planted():
    data = make_planted_activations(12_000, d=16, n_atoms=40, n_active=2, seed=3)
    return data, ArrayActivationDataModule(data.inputs, batch_size=256, eval_fraction=0.1)


_TRAINED: dict = {}


def _train(architecture, data, **kwargs):
    """One short Lightning run per (architecture, options), shared by the tests of this file."""
    key = (architecture, repr(sorted(kwargs.items())))
    if key not in _TRAINED:
        torch.manual_seed(0)
        sae = create_sae(architecture, 16, 80, dead_window=5_000, **kwargs)
        module = train_sae(sae, data, steps=200, lr=3e-3, decay_fraction=0.2, accelerator="cpu")
        _TRAINED[key] = module.sae
    return copy.deepcopy(_TRAINED[key])


def test_new_architectures_are_registered_and_reject_bad_options():
    assert set(NEW) <= set(SAE_REGISTRY)
    with pytest.raises(InvalidInputError, match="matryoshka_widths must increase"):
        create_sae("matryoshka_batchtopk", 4, 8, matryoshka_widths=[4, 2])
    with pytest.raises(InvalidInputError, match="n_experts=3 must be >= 1 and divide"):
        create_sae("switch", 4, 8, n_experts=3)
    with pytest.raises(InvalidInputError, match="transcoder"):
        create_sae("switch", 4, 8, n_experts=2, transcoder=True)
    with pytest.raises(InvalidInputError, match="variant='sigmoid'"):
        create_sae("prolu", 4, 8, variant="sigmoid")
    widths = create_sae("matryoshka_batchtopk", 4, 8, matryoshka_widths=[2, 5]).widths
    assert widths == [2, 5, 8]  # the whole dictionary is the last prefix


# --- Matryoshka BatchTopK ----------------------------------------------------------------------
def test_matryoshka_loss_is_the_hand_computed_sum_over_prefixes():
    sae = create_sae(
        "matryoshka_batchtopk", 2, 3, k=1, matryoshka_widths=[1], normalize_activations=False
    )
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 3.0]]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    x = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    # pre = (3, 0, 0) and (0, 2, 6); the batch keeps its 2 largest: 3 (row 1) and 6 (row 2).
    # whole dictionary: x̂ = (3, 0) and 6·(0.6, 0.8) = (3.6, 4.8): errors 0 and 3.6² + 2.8² = 20.8
    # first prefix (latent 0 only): x̂ = (3, 0) and (0, 0): errors 0 and 4
    losses = sae.training_loss(x)
    assert losses["mse"].item() == pytest.approx(20.8 / 2)
    assert losses["prefix_mse"].item() == pytest.approx(4.0 / 2)
    assert losses["loss"].item() == pytest.approx(10.4 + 2.0)
    assert losses["l0"].item() == pytest.approx(1.0)


def test_matryoshka_first_prefix_reconstructs_better_than_a_plain_batchtopk_prefix(planted):
    atoms, data = planted[0].atoms, planted[1]
    held = data.eval_inputs
    nested = _train("matryoshka_batchtopk", data, k=2, matryoshka_widths=[20])
    plain = _train("batchtopk", data, k=2)
    fvu_nested = fraction_of_variance_unexplained(held, prefix_reconstruction(nested, held, 20))
    fvu_plain = fraction_of_variance_unexplained(held, prefix_reconstruction(plain, held, 20))
    assert fvu_nested < 0.7 * fvu_plain
    whole = evaluate_reconstruction(nested, data.eval_batches())
    assert whole["fvu"] < 0.35 and whole["l0"] <= 2.5
    assert dictionary_recovery(atoms, nested.W_dec) > 0.3
    with pytest.raises(InvalidInputError, match=r"width must be in 1\.\.80"):
        prefix_reconstruction(plain, held, 0)


# --- Switch SAE --------------------------------------------------------------------------------
def test_switch_latents_are_the_router_scaled_topk_of_the_chosen_expert():
    torch.manual_seed(0)
    sae = create_sae("switch", 4, 6, n_experts=2, k=2, normalize_activations=False)
    x = torch.randn(7, 4)
    with torch.no_grad():
        sae.b_dec.copy_(0.1 * torch.randn(4))
        sae.b_enc.copy_(0.1 * torch.randn(6))
    probs = torch.softmax((x - sae.b_router) @ sae.W_router, -1)
    out = sae(x)
    for row in range(7):
        e = int(probs[row].argmax())
        pre = (x[row] - sae.b_dec) @ sae.W_enc[:, 3 * e : 3 * e + 3] + sae.b_enc[3 * e : 3 * e + 3]
        expected = torch.zeros(6)
        top = pre.topk(2)
        expected[3 * e + top.indices] = torch.relu(top.values) * probs[row, e]
        assert torch.allclose(out.latents[row], expected, atol=1e-6)
    assert torch.allclose(out.output, out.latents @ sae.W_dec + sae.b_dec, atol=1e-6)


def test_switch_load_balancing_term_and_router_gradient():
    sae = create_sae("switch", 4, 8, n_experts=2, k=2)
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    # both rows routed to expert 0: f = (1, 0), P_0 = 0.75 -> E · Σ f P = 2 · 0.75
    assert sae.load_balancing_loss(probs, torch.tensor([0, 0])).item() == pytest.approx(1.5)
    uniform = torch.full((4, 2), 0.5)
    assert sae.load_balancing_loss(uniform, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(1)
    x = torch.randn(32, 4)
    sae.initialize_from_sample(x)
    losses = sae.training_loss(x)
    losses["loss"].backward()
    assert sae.W_router.grad is not None and sae.W_router.grad.abs().sum() > 0
    assert losses["auxiliary"].item() == pytest.approx(losses["load_balance"].item())


def test_switch_forward_flops_against_topk_at_equal_total_latents():
    sae = create_sae("switch", 64, 512, n_experts=8, k=5)
    # router 2·64·8 + one expert's encoder 2·64·64 + sparse decoder 2·5·64
    assert sae.forward_flops() == 1024 + 8192 + 640
    assert topk_forward_flops(64, 512, 5) == 2 * 64 * 512 + 640


def test_switch_trains_through_lightning_on_planted_atoms(planted):
    atoms, data = planted[0].atoms, planted[1]
    sae = _train("switch", data, k=2, n_experts=4)
    metrics = evaluate_reconstruction(sae, data.eval_batches())
    assert metrics["l0"] <= 2.0 and metrics["fvu"] < 0.4
    assert dictionary_recovery(atoms, sae.W_dec) > 0.5


# --- ProLU -------------------------------------------------------------------------------------
def test_prolu_forward_closed_form_and_both_pseudo_derivatives():
    m0 = torch.tensor([[1.0, -1.0, 2.0, 0.5]])
    b0 = torch.tensor([-2.0, 3.0, 0.5, -0.1])
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # gate m > 0 and m + b > 0: (1, -1): no (m + b < 0); (-1, 3): no (m < 0); (2, .5), (.5, -.1): yes
    expected = torch.tensor([[0.0, 0.0, 2.0, 0.5]])
    grads = {}
    for variant in ("relu", "ste"):
        m, b = m0.clone().requires_grad_(), b0.clone().requires_grad_()
        out = prolu(m, b, variant)
        assert torch.equal(out, expected)
        out.backward(g)
        grads[variant] = (m.grad, b.grad)
    # ProLU_ReLU: ∂/∂m = ∂/∂b = gate · g
    assert torch.allclose(grads["relu"][0], torch.tensor([[0.0, 0.0, 3.0, 4.0]]))
    assert torch.allclose(grads["relu"][1], torch.tensor([0.0, 0.0, 3.0, 4.0]))
    # ProLU_STE: ∂/∂b = gate · g · m = (0, 0, 6, 2); ∂/∂m = gate · g + that = (0, 0, 9, 6)
    assert torch.allclose(grads["ste"][1], torch.tensor([0.0, 0.0, 6.0, 2.0]))
    assert torch.allclose(grads["ste"][0], torch.tensor([[0.0, 0.0, 9.0, 6.0]]))
    # a bias shared over a batch gets the sum of the rows' gradients
    b = b0.clone().requires_grad_()
    prolu(m0.repeat(3, 1), b, "relu").backward(g.repeat(3, 1))
    assert torch.allclose(b.grad, 3 * torch.tensor([0.0, 0.0, 3.0, 4.0]))


def test_prolu_sae_latents_are_the_bias_free_projection_where_the_gate_opens():
    torch.manual_seed(0)
    sae = create_sae("prolu", 4, 6, normalize_activations=False)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(6))
        sae.b_dec.copy_(torch.randn(4))
    x = torch.randn(9, 4)
    m = (x - sae.b_dec) @ sae.W_enc
    expected = torch.where((m > 0) & (m + sae.b_enc > 0), m, torch.zeros_like(m))
    assert torch.allclose(sae.encode(x), expected)


def test_prolu_trains_through_lightning_on_planted_atoms(planted):
    atoms, data = planted[0].atoms, planted[1]
    sae = _train("prolu", data, l1_coefficient=1.0)
    metrics = evaluate_reconstruction(sae, data.eval_batches())
    assert metrics["fvu"] < 0.25 and metrics["l0"] < 10
    random = dictionary_recovery(atoms, create_sae("prolu", 16, 80).W_dec)
    assert dictionary_recovery(atoms, sae.W_dec) > 0.4 > 0.05 >= random


# --- feature-suppression fix -------------------------------------------------------------------
def test_optimal_scales_undo_a_known_shrinkage_exactly():
    sae = create_sae("relu_l1", 3, 3, normalize_activations=False)
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(3))
        sae.W_enc.copy_(0.5 * torch.eye(3))  # every latent is half its true value
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.rand(20, 3) + 0.1
    scales, fired = optimal_latent_scales(sae, [x[:7], x[7:]])
    assert torch.allclose(scales, torch.full((3,), 2.0, dtype=torch.float64), atol=1e-6)
    assert fired.tolist() == [20, 20, 20]
    fix_feature_suppression(sae, [x])
    assert torch.allclose(sae(x).output, x, atol=1e-5)
    with pytest.raises(InvalidInputError, match="supports"):
        fix_feature_suppression(create_sae("topk", 3, 3), [x])


@pytest.mark.parametrize("architecture", ["relu_l1", "prolu"])
def test_suppression_fix_brings_shrinkage_to_one_on_planted_rows(planted, architecture):
    data = planted[1]
    sae = _train(architecture, data, l1_coefficient=1.0)
    before = evaluate_reconstruction(sae, data.eval_batches())
    firing_before = sae.encode(data.eval_inputs) > 0
    scales = fix_feature_suppression(sae, [data.train_inputs])
    after = evaluate_reconstruction(sae, data.eval_batches())
    assert before["gamma_rescale_reconstruction"] < 0.92  # L1 shrinks
    assert after["gamma_rescale_reconstruction"] == pytest.approx(1.0, abs=0.02)
    assert after["gamma_rescale_input"] > before["gamma_rescale_input"]
    assert after["fvu"] < before["fvu"]
    assert torch.equal(sae.encode(data.eval_inputs) > 0, firing_before)  # same latents fire
    rescaled = (scales != 1) & (scales > 1e-3)
    assert scales[rescaled].median() > 1.05  # the shrunk latents are scaled up
    again, _ = optimal_latent_scales(sae, [data.train_inputs])  # a second fix changes nothing
    assert torch.allclose(again[rescaled], torch.ones(1, dtype=again.dtype), atol=1e-3)


# --- persistence -------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", NEW)
def test_new_architectures_round_trip_through_the_model_folder(tmp_path, architecture):
    torch.manual_seed(1)
    kwargs = {"n_experts": 2, "k": 2} if architecture == "switch" else {}
    if architecture != "switch":
        kwargs.update(transcoder=True, d_out=5, skip_connection=True)
    if architecture == "matryoshka_batchtopk":
        kwargs.update(matryoshka_widths=[3, 6], k=2)
    sae = create_sae(architecture, 6, 10, **kwargs)
    x = torch.randn(40, 6)
    y = torch.randn(40, 5) if sae.transcoder else None
    sae.initialize_from_sample(x, y)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sae.training_loss(x, y)
    sae.eval()
    folder = sae.save_pretrained(tmp_path / architecture)
    loaded = neurodecode.load_pretrained(folder).eval()
    assert type(loaded) is type(sae)
    assert loaded.config() == sae.config()
    for name, value in sae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert torch.equal(sae(x).output, loaded(x).output)


@pytest.mark.parametrize("architecture", NEW)
def test_analyze_sae_config_takes_the_new_architectures_and_refuses_their_export(
    tmp_path, architecture
):
    from neurodecode.cli.analyze_sae import validate_sae_config
    from tests.analysis.test_sae_command import _tiny_config

    config = _tiny_config(tmp_path / "run")
    config["sae"] = {"architecture": architecture, "n_latents": 8, "k": 2}
    if architecture == "prolu":
        config["sae"] = {"architecture": "prolu", "n_latents": 8, "variant": "relu"}
    validate_sae_config(config, "sae.yaml")
    config["export_saelens"] = True
    with pytest.raises(InvalidInputError, match=f"not {architecture}"):
        validate_sae_config(config, "sae.yaml")
