"""MEG brain module: shapes, subject layers, spatial attention, training, time-resolved decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.models.meg import (
    MEGBrainModule,
    SpatialAttention,
    embed_trials,
    fit_brain_module,
    retrieval_per_subject,
    time_resolved_retrieval,
)
from neurodecode.validation import InvalidInputError

SMALL = dict(hidden=16, n_blocks=2, spatial_channels=12, n_freqs=4, out_channels=32)


def _geometry(n_channels=20, n_times=24, subjects=("P1", "P2"), dim=6) -> dict:
    xy = np.random.default_rng(0).uniform(size=(n_channels, 2))
    return {
        "n_channels": n_channels,
        "n_times": n_times,
        "sfreq": 120.0,
        "subjects": list(subjects),
        "sensor_xy": xy.tolist(),
        "target_shape": [dim],
    }


def _planted(n, n_channels=20, n_times=24, dim=6, onset=8, noise=1.0, seed=0):
    """Trials whose channels carry a linear image code only at samples >= onset."""
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, dim)).astype(np.float32)
    mixing = np.random.default_rng(99).normal(size=(dim, n_channels))
    bump = np.zeros(n_times)
    bump[onset : onset + 8] = np.hanning(8)
    brain = (target @ mixing)[:, :, None] * bump + noise * rng.normal(size=(n, n_channels, n_times))
    return brain.astype(np.float32), target, rng.integers(0, 2, n)


def test_forward_and_embed_shapes():
    model = MEGBrainModule(_geometry(), **SMALL)
    brain = torch.randn(5, 20, 24)
    subject = torch.tensor([0, 1, 0, 1, 1])
    clip_out, mse_out = model(brain, subject)
    assert clip_out.shape == mse_out.shape == (5, 6)
    assert model.embed(brain, subject).shape == (5, 6)
    with pytest.raises(InvalidInputError, match="time samples"):
        model(torch.randn(2, 20, 23), subject[:2])


def test_geometry_is_required_and_checked():
    with pytest.raises(InvalidInputError, match="geometry"):
        MEGBrainModule(None)
    bad = _geometry()
    bad["sensor_xy"] = bad["sensor_xy"][:-1]
    with pytest.raises(InvalidInputError, match="sensor_xy"):
        MEGBrainModule(bad)


def test_subject_layers_start_as_identity_and_separate_subjects():
    model = MEGBrainModule(_geometry(), **SMALL).eval()
    eye = torch.eye(12)
    assert torch.equal(model.subject_layers.weights[0], eye)
    assert torch.equal(model.subject_layers.weights[1], eye)
    brain = torch.randn(3, 20, 24)
    zeros, ones = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    torch.testing.assert_close(model.embed(brain, zeros), model.embed(brain, ones))
    with torch.no_grad():
        model.subject_layers.weights[1].mul_(-1)
    assert not torch.allclose(model.embed(brain, zeros), model.embed(brain, ones))
    torch.testing.assert_close(
        model.embed(brain, zeros),
        model.embed(brain, torch.zeros(3, dtype=torch.long)),
    )


def test_spatial_attention_is_a_softmax_over_inputs_with_disk_dropout():
    xy = torch.rand(30, 2)
    attention = SpatialAttention(xy, out_channels=7, n_freqs=5, dropout_radius=0.3)
    weights = attention.attention_weights()
    assert weights.shape == (7, 30)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(7))
    drop = (xy - torch.tensor([0.5, 0.5])).norm(dim=1) < 0.3
    dropped = attention.attention_weights(drop)
    assert (dropped[:, drop] == 0).all()
    torch.testing.assert_close(dropped.sum(1), torch.ones(7))
    # the output is the weighted sum of the input sensors
    x = torch.randn(2, 30, 9)
    attention.eval()
    torch.testing.assert_close(attention(x), torch.einsum("oc,bct->bot", weights, x))


def test_tiny_training_decodes_above_chance():
    geometry = _geometry()
    brain, target, subject = _planted(400)
    test_brain, test_target, test_subject = _planted(40, seed=1)
    model = MEGBrainModule(geometry, **SMALL, lr=3e-3, spatial_dropout=0.0)
    fit_brain_module(model, brain, target, subject, max_epochs=12, batch_size=32)
    scores = retrieval_per_subject(
        embed_trials(model, test_brain, test_subject), test_target, test_subject, 10, 30, 0
    )
    assert scores["chance_top1"] == pytest.approx(0.1)
    assert scores["brain_to_image_top1"] > 0.4


def test_time_resolved_ridge_peaks_where_the_signal_is():
    brain, target, subject = _planted(300, onset=12, noise=0.7)
    test_brain, test_target, test_subject = _planted(60, onset=12, noise=0.7, seed=1)
    times = -0.1 + np.arange(24) / 40.0  # onset sample 12 = 0.2 s
    curve = time_resolved_retrieval(
        brain,
        target,
        subject,
        test_brain,
        test_target,
        test_subject,
        times,
        decoders=("ridge",),
        window_s=0.1,
        step_s=0.05,
        n_way=20,
        n_draws=10,
    )
    top1 = np.array(curve["ridge"]["brain_to_image_top1"])
    starts = np.array(curve["window_start_s"])
    assert len(top1) == len(starts) == len(curve["window_centre_s"])
    assert starts[np.argmax(top1)] >= 0.15
    assert top1[starts < 0.05].max() < 0.2  # before the signal: near chance (0.05)
    assert top1.max() > 0.5


def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path):
    model = MEGBrainModule(_geometry(), **SMALL).eval()
    with torch.no_grad():
        model.subject_layers.weights[1].mul_(0.5)
    model.save_pretrained(tmp_path / "meg")
    loaded = MEGBrainModule.from_pretrained(tmp_path / "meg").eval()
    brain, subject = torch.randn(4, 20, 24), torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(loaded.embed(brain, subject), model.embed(brain, subject))


def test_onecycle_schedule_warms_up_then_anneals_per_step():
    """The default schedule: lr/25 at the start, the peak after warmup_fraction, ~0 at the end."""
    import lightning.pytorch as pl

    class RecordLR(pl.Callback):
        def __init__(self) -> None:
            self.lrs: list[float] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    brain, target, subject = _planted(64)
    model = MEGBrainModule(
        _geometry(), **SMALL, lr=1e-2, lr_schedule="onecycle", warmup_fraction=0.25
    )
    loader = torch.utils.data.DataLoader(
        [{"brain": b, "target": t, "subject": s} for b, t, s in zip(brain, target, subject)],
        batch_size=8,
    )
    record = RecordLR()
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(model, loader)
    lrs = np.array(record.lrs)
    assert len(lrs) == 16  # one scheduler step per batch: 2 epochs x 8 batches
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert np.argmax(lrs) == 3  # OneCycleLR peaks at step pct_start * total - 1 = 3
    assert lrs.max() == pytest.approx(1e-2, rel=1e-3)
    assert lrs[-1] < 1e-2 / 20 and np.all(np.diff(lrs[3:]) < 0)


def test_constant_schedule_and_bad_schedule():
    model = MEGBrainModule(_geometry(), **SMALL, lr_schedule="constant", lr=2e-3)
    optimizer = model.configure_optimizers()["optimizer"]
    assert set(model.configure_optimizers()) == {"optimizer"}  # no scheduler
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 2e-3
    with pytest.raises(InvalidInputError, match="lr_schedule"):
        MEGBrainModule(_geometry(), **SMALL, lr_schedule="cosine-ish")
    with pytest.raises(InvalidInputError, match="warmup_fraction"):
        MEGBrainModule(_geometry(), **SMALL, warmup_fraction=0.0)


def test_spatial_init_scale_sharpens_the_initial_attention():
    xy = torch.rand(40, 2)
    torch.manual_seed(0)
    broad = SpatialAttention(xy, out_channels=8, n_freqs=4, init_scale=1.0)
    torch.manual_seed(0)
    sharp = SpatialAttention(xy, out_channels=8, n_freqs=4, init_scale=4.0)
    torch.testing.assert_close(sharp.attention_logits(), 4 * broad.attention_logits())
    # sharper: the largest weight of each virtual channel grows
    assert (sharp.attention_weights().max(1).values > broad.attention_weights().max(1).values).all()


@pytest.mark.parametrize("learn", [False, True])
def test_temperature_is_learned_only_when_asked(learn):
    brain, target, subject = _planted(16)
    model = MEGBrainModule(_geometry(), **SMALL, temperature=0.2, learn_temperature=learn)
    assert model.clip_temperature().item() == pytest.approx(0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = {
        "brain": torch.from_numpy(brain),
        "target": torch.from_numpy(target),
        "subject": torch.from_numpy(subject),
    }
    model._loss(batch, "train").backward()
    optimizer.step()
    moved = model.clip_temperature().item() != pytest.approx(0.2, abs=1e-7)
    assert moved == learn
    with pytest.raises(InvalidInputError, match="temperature"):
        MEGBrainModule(_geometry(), **SMALL, temperature=0.0)


def test_sim_meg_optimisation_trains_faster_than_the_former_settings():
    """experiments/sim_meg.yaml's optimisation (one-cycle 3e-3, temperature 0.2, sharp attention)
    decodes after 4 epochs, where the former settings (constant 1e-3, 0.05) are still near chance.
    """
    from pathlib import Path

    import yaml

    config = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "experiments/sim_meg.yaml").read_text()
    )["model"]["init_args"]
    keys = ("lr", "lr_schedule", "warmup_fraction", "temperature", "spatial_init_scale")
    settings = {
        "shipped": {k: config[k] for k in keys},
        "former": {"lr": 1e-3, "lr_schedule": "constant", "temperature": 0.05},
    }
    brain, target, subject = _planted(400, n_channels=40, noise=2.0)
    test_brain, test_target, test_subject = _planted(40, n_channels=40, noise=2.0, seed=1)
    top1 = {}
    for name, kwargs in settings.items():
        torch.manual_seed(0)
        model = MEGBrainModule(_geometry(n_channels=40), **SMALL, **kwargs)
        fit_brain_module(model, brain, target, subject, max_epochs=4, batch_size=32)
        emb = embed_trials(model, test_brain, test_subject)
        top1[name] = retrieval_per_subject(emb, test_target, test_subject, 10, 30, 0)[
            "brain_to_image_top1"
        ]
    assert top1["shipped"] > 0.3  # chance 0.1
    assert top1["shipped"] > top1["former"] + 0.1
