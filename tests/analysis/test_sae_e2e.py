"""End-to-end SAEs (Braun et al. 2024): the loss terms by hand, and planted truth — a frozen
network that reads only a low-variance subspace of the hooked layer, where an e2e SAE must beat a
local-MSE SAE of the same size on downstream KL at equal L0 by spending its latents there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neurodecode
from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.e2e import (
    E2ETrainingModule,
    e2e_evaluation,
    save_e2e_sae,
    train_e2e_sae,
)
from neurodecode.analysis.sae.pathology import kl_divergence
from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae
from neurodecode.pretrained import read_config
from neurodecode.validation import InvalidInputError

D, R, N_REL, N_IRR, CLASSES, K = 16, 4, 8, 24, 8, 2


class ReadoutNet(nn.Module):
    """``layer`` (identity-initialised linear) then logits ``3 · <a_j, h>`` over the relevant
    atoms ``a_j``, which all lie in the planted subspace: the output ignores its complement."""

    def __init__(self, relevant: torch.Tensor) -> None:
        super().__init__()
        self.layer = nn.Linear(D, D)
        self.head = nn.Linear(D, CLASSES, bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(D))
            self.layer.bias.zero_()
            self.head.weight.copy_(3.0 * relevant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x))


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    inside, outside = basis[:, :R].T, basis[:, R:].T  # orthonormal rows
    relevant = torch.randn(N_REL, R, generator=g)
    relevant = (relevant / relevant.norm(dim=1, keepdim=True)) @ inside
    irrelevant = torch.randn(N_IRR, D - R, generator=g)
    irrelevant = (irrelevant / irrelevant.norm(dim=1, keepdim=True)) @ outside

    def rows(n: int, seed: int) -> torch.Tensor:
        # one relevant atom (coefficient 0.5-1.5) and two irrelevant ones (2-4) per row: the
        # irrelevant part holds ~90 % of the variance
        g = torch.Generator().manual_seed(seed)
        which = torch.randint(N_REL, (n,), generator=g)
        coef = 0.5 + torch.rand(n, generator=g)
        pairs = torch.rand(n, N_IRR, generator=g).argsort(1)[:, :2]
        coefs = 2.0 + 2.0 * torch.rand(n, 2, generator=g)
        return coef[:, None] * relevant[which] + (coefs[:, :, None] * irrelevant[pairs]).sum(1)

    return {
        "net": ReadoutNet(relevant),
        "projector": inside.T @ inside,
        "train": rows(8000, 1),
        "held": rows(1000, 2),  # scored only; nothing is chosen on it
    }


_TRAINED: dict = {}


def _trained(world, kind: str):
    if kind not in _TRAINED:
        torch.manual_seed(0)
        sae = create_sae("topk", D, 32, k=K, dead_window=4000)
        if kind == "local":
            data = ArrayActivationDataModule(world["train"], batch_size=256, eval_fraction=0.0)
            trained = train_sae(sae, data, steps=400, lr=3e-3, accelerator="cpu").sae
        else:
            ds = {"later_layers": ["head"], "ds_coefficient": 1.0} if kind == "e2e+ds" else {}
            module = train_e2e_sae(
                sae, world["net"], "layer", world["train"], steps=400, batch_size=256, lr=3e-3,
                accelerator="cpu", **ds,
            )  # fmt: skip
            trained = module.sae
            _TRAINED[kind + "/module"] = module
        _TRAINED[kind] = trained.cpu().eval()
    return _TRAINED[kind]


def _subspace_fvu(sae, rows, projector) -> float:
    """FVU of the planted-subspace part of the rows (what the network reads)."""
    with torch.no_grad():
        target, recon = rows @ projector, sae(rows).output @ projector
    return float((target - recon).pow(2).sum() / (target - target.mean(0)).pow(2).sum())


def test_e2e_loss_is_kl_plus_ds_plus_sparsity_by_hand_and_has_no_local_mse(world):
    net = world["net"]
    torch.manual_seed(3)
    sae = create_sae("relu_l1", D, 12, l1_coefficient=0.01)
    x = world["train"][:64]
    sae.initialize_from_sample(x)
    module = E2ETrainingModule(sae, net, "layer", later_layers=["head"], ds_coefficient=0.5)
    terms = module.e2e_loss(x)
    with torch.no_grad():
        recon = sae(x).output
        clean, patched = net(x), net.head(recon)
        kl = kl_divergence(clean, patched).mean()
        ds = (patched - clean).pow(2).sum(-1).mean() / clean.pow(2).sum(-1).mean()
        latents = sae.encode(x)
        l1 = 0.01 * (latents * sae.decoder_norms()).sum(-1).mean()
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["ds"].item() == pytest.approx(ds.item(), rel=1e-5)
    assert terms["sparsity"].item() == pytest.approx(l1.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(kl.item() + 0.5 * ds.item() + l1.item(), rel=1e-5)
    # an error the network cannot see costs nothing: tilt every decoder atom into the ignored
    # subspace (the latents stay the same; only the sparsity term's decoder norms move)
    ignored = torch.eye(D) - world["projector"]
    with torch.no_grad():
        sae.W_dec.add_(torch.randn(12, D) @ ignored)
    moved = module.e2e_loss(x)
    for term in ("kl", "ds"):
        assert moved[term].item() == pytest.approx(terms[term].item(), rel=1e-5)
    unchanged = terms["loss"] - terms["sparsity"]
    assert (moved["loss"] - moved["sparsity"]).item() == pytest.approx(unchanged.item(), rel=1e-5)
    assert sae(x).output.sub(recon).norm() > 1.0  # while the local reconstruction changed


def test_e2e_beats_a_local_sae_downstream_at_equal_l0_by_reading_the_planted_subspace(world):
    net, held, projector = world["net"], world["held"], world["projector"]
    local = e2e_evaluation(_trained(world, "local"), net, "layer", held)
    for kind in ("e2e", "e2e+ds"):
        sae = _trained(world, kind)
        end = e2e_evaluation(sae, net, "layer", held)
        assert end["l0"] == pytest.approx(local["l0"], abs=0.05) and end["l0"] <= K
        assert end["kl"] < 0.25 * local["kl"], (kind, end["kl"], local["kl"])
        # its latents go to the subspace the network reads, at the cost of the layer's FVU
        assert _subspace_fvu(sae, held, projector) < 0.3
        assert end["fvu"] > local["fvu"] + 0.3
    assert _subspace_fvu(_trained(world, "local"), held, projector) > 0.8
    assert local["fvu"] < 0.3  # the local SAE does reconstruct the layer (the variance outside)


def test_e2e_sae_round_trips_through_the_model_folder(world, tmp_path):
    _trained(world, "e2e+ds")
    module = _TRAINED["e2e+ds/module"]
    folder = save_e2e_sae(module, tmp_path / "e2e", metadata={"network": "ReadoutNet"})
    loaded = neurodecode.load_pretrained(folder).eval()
    sae = module.sae.cpu().eval()
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for name, value in sae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    held = world["held"]
    assert torch.equal(loaded(held).output, sae(held).output)
    metadata = read_config(folder)["metadata"]
    assert metadata["network"] == "ReadoutNet"
    assert metadata["training"] == {
        "objective": "e2e+ds",
        "layer": "layer",
        "later_layers": ["head"],
        "kl_coefficient": 1.0,
        "ds_coefficient": 1.0,
        "lr": 3e-3,
        "steps": 400,
    }


def test_training_gives_the_network_its_requires_grad_flags_back(world):
    net = ReadoutNet(world["net"].head.weight.detach() / 3.0)
    net.head.weight.requires_grad_(False)
    before = net.head.weight.detach().clone()
    train_e2e_sae(create_sae("topk", D, 8, k=2), net, "layer", world["train"], steps=3,
                  batch_size=32, accelerator="cpu")  # fmt: skip
    assert net.layer.weight.requires_grad and net.layer.bias.requires_grad
    assert not net.head.weight.requires_grad
    assert torch.equal(net.head.weight, before)  # and never optimised it


def test_bad_inputs(world):
    net = world["net"]
    with pytest.raises(InvalidInputError, match="transcoder"):
        E2ETrainingModule(create_sae("topk", D, 8, transcoder=True), net, "layer")
    for architecture in ("gated", "switch"):
        with pytest.raises(InvalidInputError, match="end-to-end training supports"):
            E2ETrainingModule(create_sae(architecture, D, 8), net, "layer")
    with pytest.raises(InvalidInputError, match="not a submodule"):
        E2ETrainingModule(create_sae("topk", D, 8), net, "nope")
    with pytest.raises(InvalidInputError, match="needs later_layers"):
        E2ETrainingModule(create_sae("topk", D, 8), net, "layer", ds_coefficient=1.0)
    with pytest.raises(InvalidInputError, match="width 16"):
        E2ETrainingModule(create_sae("topk", 5, 8), net, "layer").e2e_loss(world["train"][:4])
    with pytest.raises(InvalidInputError, match="steps and batch_size"):
        train_e2e_sae(create_sae("topk", D, 8), net, "layer", world["train"], steps=0)
    with pytest.raises(InvalidInputError, match="E2ETrainingModule"):
        save_e2e_sae(create_sae("topk", D, 8), "unused")
