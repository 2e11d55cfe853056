"""Diffusion prior: learns a planted brain -> image embedding map, shapes, guidance, Lightning."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from neurodecode.models.prior import DiffusionPrior, PriorModule
from neurodecode.validation import InvalidInputError

TINY = {"depth": 2, "num_heads": 2, "head_dim": 16}


def planted(n: int = 128, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings z and brain embeddings = a fixed linear map of z plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g) * 3.0
    mixing = torch.randn(dim, dim, generator=g) / 4
    cond = z @ mixing + 0.05 * torch.randn(n, dim, generator=g)
    return cond, z


@pytest.fixture(scope="module")
def trained_prior() -> tuple[DiffusionPrior, torch.Tensor, torch.Tensor, list[float]]:
    torch.manual_seed(0)
    cond, z = planted()
    prior = DiffusionPrior([16], **TINY)
    opt = torch.optim.AdamW(prior.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(220):
        idx = torch.randint(0, 96, (32,), generator=g)
        loss = prior.loss(cond[idx], z[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return prior.eval(), cond[96:], z[96:], losses


def test_prior_loss_decreases(trained_prior):
    _, _, _, losses = trained_prior
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first


def test_prior_records_target_scale(trained_prior):
    prior, _, z, _ = trained_prior
    assert prior.target_norm.item() == pytest.approx(z.norm(dim=1).mean().item(), rel=0.15)


def test_prior_samples_match_their_own_item(trained_prior):
    prior, cond, z, _ = trained_prior
    sample = prior.sample(cond, num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert sample.shape == z.shape
    sims = F.normalize(sample, dim=1) @ F.normalize(z, dim=1).T
    own = sims.diag()
    others = (sims.sum(1) - own) / (len(z) - 1)
    assert own.mean() > 0.5
    assert (own > others).float().mean() > 0.9
    top1 = (sims.argmax(1) == torch.arange(len(z))).float().mean()
    assert top1 > 10 / len(z)  # >= 10x chance
    # samples come back in the scale of the training targets
    assert sample.norm(dim=1).mean().item() == pytest.approx(z.norm(dim=1).mean().item(), rel=0.3)


def test_prior_sampling_is_reproducible_and_guidance_runs(trained_prior):
    prior, cond, _, _ = trained_prior
    a = prior.sample(cond[:4], num_inference_steps=5, generator=torch.Generator().manual_seed(7))
    b = prior.sample(cond[:4], num_inference_steps=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    guided = prior.sample(
        cond[:4],
        num_inference_steps=5,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(7),
    )
    assert guided.shape == a.shape and not torch.allclose(guided, a)
    ddpm = prior.sample(cond[:4], num_inference_steps=5, scheduler="ddpm")
    assert ddpm.shape == a.shape and torch.isfinite(ddpm).all()
    with pytest.raises(InvalidInputError, match="scheduler"):
        prior.sample(cond[:4], scheduler="euler")


def test_token_level_prior_shapes():
    prior = DiffusionPrior([3, 8], **TINY)
    cond, image = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    loss = prior.loss(cond, image)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert prior.net.x_in.weight.grad is not None
    assert prior.sample(cond, num_inference_steps=3).shape == (5, 3, 8)
    with pytest.raises(InvalidInputError, match=r"brain_emb has shape \(5, 24\)"):
        prior.loss(cond.flatten(1), image)


def test_condition_dropout_only_in_training():
    prior = DiffusionPrior([4], **TINY, cond_drop_prob=0.2)
    seen = []
    prior.net.register_forward_hook(lambda m, args, out: seen.append(args[3].float().mean()))
    torch.manual_seed(0)
    prior.train().loss(torch.randn(2000, 4), torch.randn(2000, 4))
    prior.eval().loss(torch.randn(100, 4), torch.randn(100, 4))
    assert seen[0].item() == pytest.approx(0.2, abs=0.03)
    assert seen[1].item() == 0.0
    with pytest.raises(InvalidInputError, match="cond_drop_prob"):
        DiffusionPrior([4], cond_drop_prob=1.0)


class _DictData(torch.utils.data.Dataset):
    def __init__(self, items: dict[str, torch.Tensor]):
        self.items = items

    def __len__(self) -> int:
        return len(next(iter(self.items.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.items.items()}


def _trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_prior_module_trains_on_given_conditions():
    torch.manual_seed(0)
    cond, z = planted(n=64)
    data = _DictData({"condition": cond, "target": z})
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
    val_loader = torch.utils.data.DataLoader(data, batch_size=16)
    module = PriorModule({"target_shape": [16]}, prior=TINY, lr=3e-3)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = _trainer(2)
    trainer.fit(module, loader, val_loader)
    assert trainer.global_step == 8
    assert "val/prior_cosine" in trainer.callback_metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert module.embed(cond[:3], num_inference_steps=4).shape == (3, 16)


def test_prior_module_with_frozen_encoder():
    from neurodecode.models.retrieval import RetrievalModule

    geometry = {"n_voxels": {"subj01": 20}, "target_shape": [8]}
    encoder = RetrievalModule(geometry, hidden_dim=16, n_blocks=1, projector_dim=16)
    encoder_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    module = PriorModule(geometry, prior=TINY, encoder=encoder)
    assert not any(k.startswith("encoder") for k in module.state_dict())  # not saved with it
    batch = {"brain": torch.randn(8, 20), "subject": torch.zeros(8, dtype=torch.long)}
    batch["target"] = torch.randn(8, 8)
    loader = torch.utils.data.DataLoader(_DictData(batch), batch_size=4)
    _trainer(1).fit(module, loader)
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in encoder_state.items())
    bare = PriorModule(geometry, prior=TINY)
    with pytest.raises(InvalidInputError, match="condition"):
        bare.training_step(batch, 0)
