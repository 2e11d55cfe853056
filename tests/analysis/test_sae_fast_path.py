"""The fast TopK training path computes what the reference path does (tiny, seconds).

Two-stage top-k selection, the sparse encoder/decoder, AuxK over the dead columns only, the
host-side dead-latent bound, contiguous batches, the Trainer-free loop and its Adam step each
against the straightforward computation they replace.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurodecode.analysis.sae import topk as topk_module
from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.topk import gathered_activations, sparse_decode, topk_indices
from neurodecode.analysis.sae.training import (
    ArrayActivationDataModule,
    RandomRowBatches,
    _adam_step,
    train_sae,
)
from neurodecode.validation import InvalidInputError


@pytest.mark.parametrize(
    ("n_rows", "n_columns", "k"), [(64, 512, 8), (16, 4096, 32), (9, 100, 3), (5, 64, 64)]
)
def test_topk_indices_pick_the_values_of_a_full_topk(n_rows, n_columns, k):
    torch.manual_seed(0)
    pre = torch.randn(n_rows, n_columns)
    pre[0, :] = 0.5  # a row of ties
    pre[1, : n_columns // 2] = -1.0  # ties below the k-th value
    index = topk_indices(pre, k)
    assert index.shape == (n_rows, k)
    assert all(len(set(row.tolist())) == k for row in index)  # k distinct columns per row
    got = pre.gather(-1, index).sort(-1).values
    want = pre.topk(k, dim=-1).values.sort(-1).values
    assert torch.equal(got, want)


def test_topk_indices_on_the_float_bits_keep_the_float_order_of_every_row():
    torch.manual_seed(9)
    pre = torch.randn(12, 512)
    pre[0] = -torch.rand(512)  # no positive entry: the float top-k of this row
    pre[1, 5:] = -1.0  # five positive entries, then ties below zero
    pre[2, :300] = 0.0
    pre[2, 300:] = -0.0  # zeros of both signs are equal values
    pre[3, :4] = float("inf")
    pre[3, 4:9] = -float("inf")
    pre[4, 10:20] = 1e-40  # subnormal values
    for row in range(12):
        got = pre.gather(-1, topk_indices(pre, 8)).sort(-1).values
        want = pre.topk(8, dim=-1).values.sort(-1).values
        assert torch.equal(got[row], want[row]), row
    for nan in (float("nan"), -float("nan")):  # torch counts every NaN as largest
        with_nan = pre.clone()
        with_nan[5, 7] = nan
        index = topk_indices(with_nan, 8)
        assert torch.isnan(with_nan[5, index[5]]).sum() == 1
        assert torch.equal(index[6].sort().values, pre[6].topk(8).indices.sort().values)


def test_sparse_decode_equals_the_dense_product():
    torch.manual_seed(1)
    W_dec = torch.randn(50, 7)
    index = torch.stack([torch.randperm(50)[:4] for _ in range(6)])
    values = torch.rand(6, 4)
    dense = torch.zeros(6, 50).scatter(-1, index, values)
    assert torch.allclose(sparse_decode(values, index, W_dec), dense @ W_dec, atol=1e-6)


def test_gathered_activations_give_the_dense_gradients_to_every_input():
    torch.manual_seed(2)
    x = torch.randn(10, 6, requires_grad=True)
    centre = torch.randn(6, requires_grad=True)
    W_enc = torch.randn(6, 30, requires_grad=True)
    b_enc = torch.randn(30, requires_grad=True)
    with torch.no_grad():
        pre = (x - centre) @ W_enc + b_enc
    index = pre.topk(5, dim=-1).indices
    weights = torch.randn(10, 5)
    sparse = (gathered_activations(x, centre, W_enc, b_enc, pre, index) * weights).sum()
    sparse_grads = torch.autograd.grad(sparse, (x, centre, W_enc, b_enc))
    dense = (torch.relu((x - centre) @ W_enc + b_enc).gather(-1, index) * weights).sum()
    dense_grads = torch.autograd.grad(dense, (x, centre, W_enc, b_enc))
    assert torch.allclose(sparse, dense, atol=1e-5)
    for name, got, want in zip(("x", "centre", "W_enc", "b_enc"), sparse_grads, dense_grads):
        assert torch.allclose(got, want, atol=1e-5), name


def _perturbed_topk(n_dead: int, k_aux: int, seed: int = 0):
    torch.manual_seed(seed)
    sae = create_sae("topk", 16, 64, k=4, k_aux=k_aux, dead_window=1000)
    x = torch.randn(32, 16)
    sae.initialize_from_sample(x)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
        # dead latents small but positive: never in the top k, yet picked by AuxK
        sae.W_enc[:, :n_dead] *= 0.01
        sae.b_enc[:n_dead] = 0.05 + 0.01 * torch.rand(n_dead)
        sae.rows_since_fired[:n_dead] = 5000  # dead: AuxK is active on these
    return sae, x


@pytest.mark.parametrize(("n_dead", "k_aux"), [(3, 8), (40, 8), (64, 32)])
def test_auxk_over_dead_columns_equals_the_masked_dense_auxk(n_dead, k_aux):
    sparse, x = _perturbed_topk(n_dead, k_aux)
    dense = copy.deepcopy(sparse)
    got = sparse.training_loss(x)
    want = dense.dense_training_loss(x)
    assert float(got["auxiliary"]) > 0
    for key in ("loss", "mse", "auxiliary", "dead_fraction"):
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5, abs=1e-7), key
    got["loss"].backward()
    want["loss"].backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    assert torch.equal(sparse.rows_since_fired, dense.rows_since_fired)


def test_dead_latent_bound_follows_the_counters_and_any_outside_write():
    sae, x = _perturbed_topk(0, 8)
    assert float(sae.training_loss(x)["auxiliary"]) == 0.0  # nothing dead: AuxK skipped
    # the host bound grows with each batch: after enough rows, unfired latents are dead
    sae.dead_window = 64
    for _ in range(3):
        out = sae.training_loss(x)
    never_fired = sae.rows_since_fired >= 64
    assert never_fired.any() and float(out["auxiliary"]) > 0
    # an outside write (here: every latent marked as just fired) is seen at the next step
    sae.dead_window = 10_000
    sae.training_loss(x)
    with torch.no_grad():
        sae.rows_since_fired.fill_(20_000)
    assert float(sae.training_loss(x)["auxiliary"]) > 0
    # and so is a loaded state (a copy into the buffer)
    state = {k: v.clone() for k, v in sae.state_dict().items()}
    state["rows_since_fired"].zero_()
    sae.load_state_dict(state)
    assert float(sae.training_loss(x)["auxiliary"]) == 0.0


@pytest.mark.parametrize("with_targets", [False, True])
def test_contiguous_batches_are_the_rows_of_the_shuffled_order(with_targets):
    rows = torch.arange(230 * 3, dtype=torch.float32).view(230, 3)
    targets = -rows[:, :2] if with_targets else None
    batches = RandomRowBatches(rows, targets, batch_size=16, seed=4)
    batches.BLOCK_BATCHES = 3  # several blocks per epoch
    got = iter(batches)
    generator = torch.Generator().manual_seed(4)
    for _epoch in range(2):
        order = torch.randperm(230, generator=generator)
        for start in range(0, 230 - 16 + 1, 16):
            index = order[start : start + 16]
            batch = next(got)
            if with_targets:
                assert torch.equal(batch[0], rows[index]) and torch.equal(batch[1], targets[index])
            else:
                assert torch.equal(batch, rows[index])


@pytest.mark.parametrize(
    ("architecture", "options", "transcoder"),
    [("topk", {"k": 3, "k_aux": 4}, False), ("topk", {"k": 3}, True), ("relu_l1", {}, False)],
)
def test_plain_loop_trains_the_same_weights_as_the_lightning_trainer(
    architecture, options, transcoder
):
    rng = np.random.default_rng(5)
    inputs = rng.normal(size=(600, 12)).astype(np.float32)
    targets = rng.normal(size=(600, 10)).astype(np.float32) if transcoder else None
    data = ArrayActivationDataModule(inputs, targets, batch_size=64, seed=5)
    kwargs = {"transcoder": True, "d_out": 10} if transcoder else {}
    torch.manual_seed(0)
    first = create_sae(architecture, 12, 48, dead_window=300, **options, **kwargs)
    second = copy.deepcopy(first)
    initial = copy.deepcopy(first)
    common = {"steps": 25, "lr": 1e-2, "warmup_steps": 3, "decay_fraction": 0.3}
    common["accelerator"] = "cpu"
    trainer = train_sae(first, data, engine="lightning", gradient_clip=0.5, **common)
    plain = train_sae(second, data, engine="plain", gradient_clip=0.5, **common)
    assert trainer.global_step == plain.global_step == 25
    assert not torch.allclose(first.W_dec, initial.W_dec)  # it did train
    assert not first.training and not second.training
    for (name, p), q in zip(first.named_parameters(), second.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name
    assert torch.equal(first.rows_since_fired, second.rows_since_fired)


def test_auto_engine_and_plain_engine_refusals(tmp_path):
    rows = np.random.default_rng(6).normal(size=(200, 6)).astype(np.float32)
    data = ArrayActivationDataModule(rows, batch_size=32)
    sae = create_sae("topk", 6, 12, k=2)
    # a DataLoader that ends after 3 batches is started again, as the Trainer does
    loader = DataLoader(torch.from_numpy(rows[:96]), batch_size=32)
    module = train_sae(sae, loader, steps=7, engine="plain", accelerator="cpu", init_sample=None)
    assert module.global_step == 7
    with pytest.raises(InvalidInputError, match="engine"):
        train_sae(sae, data, steps=1, engine="fast")
    with pytest.raises(InvalidInputError, match="engine='plain'"):
        train_sae(sae, data, steps=1, engine="plain", accelerator="tpu")
    # with a run_dir the Trainer runs (it writes the logs)
    logged = train_sae(sae, data, steps=4, run_dir=tmp_path, accelerator="cpu")
    assert logged.trainer is not None and logged.global_step == 4


def test_bfloat16_selection_keeps_exact_values_and_the_exact_picks_where_rows_have_a_gap():
    torch.manual_seed(7)
    exact = create_sae("topk", 32, 256, k=6, k_aux=8, dead_window=1000)
    x = torch.randn(200, 32)
    exact.initialize_from_sample(x)
    with torch.no_grad():
        exact.rows_since_fired[:30] = 5000  # AuxK active in both
    rough = create_sae(
        "topk", 32, 256, k=6, k_aux=8, dead_window=1000, selection_precision="bfloat16"
    )
    rough.load_state_dict(exact.state_dict())
    with torch.no_grad():
        centred = x * exact.input_scale - exact.b_dec
        pre = centred @ exact.W_enc + exact.b_enc
        scores = pre.to(torch.bfloat16)
        index, picked = rough._select(centred, scores, 6)
    # the values handed to the loss are the exact pre-activations at the picks
    assert torch.allclose(picked, pre.gather(-1, index), atol=1e-5)
    # and the picks are the exact top 6 on every row whose 6th and 12th values are apart
    top = pre.topk(12, dim=-1).values
    clear = (top[:, 5] - top[:, 11]) > 0.05 * top[:, 0].abs()
    same = (index.sort(-1).values == pre.topk(6, dim=-1).indices.sort(-1).values).all(-1)
    assert clear.float().mean() > 0.9 and same[clear].all()
    got, want = rough.training_loss(x), exact.training_loss(x)
    assert float(got["auxiliary"]) > 0
    for key in ("loss", "mse", "auxiliary"):
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-3), key
    with pytest.raises(InvalidInputError, match="selection_precision"):
        create_sae("topk", 4, 8, selection_precision="int8")


@pytest.mark.parametrize("sorted_picks", [False, True])
@pytest.mark.parametrize(
    ("options", "transcoder"),
    [({"k": 5}, False), ({"k": 5, "selection_precision": "bfloat16"}, False), ({"k": 4}, True)],
)
def test_written_gradients_equal_the_autograd_gradients(
    options, transcoder, sorted_picks, monkeypatch
):
    if sorted_picks:  # the large-SAE way: the picks sorted by latent, sparse-dense products
        monkeypatch.setattr(topk_module, "_INDEX_ADD_TERMS", 0)
    torch.manual_seed(3)
    kwargs = {"transcoder": True, "d_out": 11} if transcoder else {}
    sae = create_sae("topk", 16, 96, dead_window=10**9, encoder_init_scale=1.0, **options, **kwargs)
    with torch.no_grad():  # every term non-trivial: biases, scales, a transcoder's centre
        sae.b_dec.normal_()
        sae.b_enc.normal_(-6.0, 1.0)  # some picked pre-activations are negative: the ReLU
        sae.input_scale.fill_(1.3)
        sae.output_scale.fill_(0.7 if transcoder else 1.3)
        sae.input_centre.normal_()
    twin = copy.deepcopy(sae)
    x = torch.randn(70, 16)
    target = torch.randn(70, 11) if transcoder else None
    loss = twin.training_loss(x, target)["loss"]
    loss.backward()
    written = sae.write_training_gradients(x, target)
    assert written is not None
    assert torch.allclose(written, loss.detach(), rtol=1e-6)
    for (name, p), q in zip(twin.named_parameters(), sae.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
        assert p.grad.abs().max() > 0, name  # the comparison is not between zeros
        # optimisers (torch's fused Adam) read a gradient in the parameter's strides
        assert q.grad.stride() == q.stride(), name
    assert torch.equal(twin.rows_since_fired, sae.rows_since_fired)
    fired = twin.rows_since_fired == 0
    assert 0 < fired.sum() < 96 and sae.b_enc.grad[~fired].abs().max() == 0


def test_written_gradients_defer_to_autograd_for_auxk_and_skip_connections():
    x = torch.randn(32, 8)
    near_dead = create_sae("topk", 8, 24, k=2, dead_window=40)
    assert near_dead.write_training_gradients(x) is not None  # 32 rows: nothing can be dead
    # after 64 rows a latent may be dead, as the autograd path would count before its AuxK
    assert near_dead.write_training_gradients(x) is None
    skip = create_sae("topk", 8, 24, k=2, transcoder=True, d_out=6, skip_connection=True)
    assert skip.write_training_gradients(x, torch.randn(32, 6)) is None


def test_written_gradients_defer_to_autograd_below_float32():
    sae = create_sae("topk", 8, 24, k=2).to(torch.bfloat16)
    assert sae.write_training_gradients(torch.randn(16, 8, dtype=torch.bfloat16)) is None


@pytest.mark.parametrize("fused", [True, None])
def test_plain_adam_step_equals_the_optimizer_step(fused):
    torch.manual_seed(8)
    shapes = [(24, 6), (6, 24), (24,), (6,)]
    stepped = [torch.nn.Parameter(torch.randn(*shape)) for shape in shapes]
    # stored as a transpose, as the TopK encoder is: Adam runs on contiguous views of it
    stepped.append(torch.nn.Parameter(torch.randn(24, 6).t()))
    plain = [torch.nn.Parameter(p.detach().clone()) for p in stepped]
    assert plain[-1].stride() == stepped[-1].stride() == (1, 6)
    optimizers = [torch.optim.Adam(ps, lr=1e-2, fused=fused) for ps in (stepped, plain)]
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (s + 1)) for o in optimizers]
    calls = []  # Adam.step runs its hooks: only the first plain step goes through it
    optimizers[1].register_step_post_hook(lambda *args: calls.append(1))
    for step in range(6):
        for p, q in zip(stepped, plain, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        if step == 3:  # a parameter without a gradient is skipped, as Adam.step skips it
            stepped[2].grad = plain[2].grad = None
        optimizers[0].step()
        _adam_step(optimizers[1])  # the first step creates the state through Adam.step
        for scheduler in schedulers:
            scheduler.step()
    assert len(calls) == 1
    for p, q in zip(stepped, plain, strict=True):
        assert torch.equal(p, q)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(optimizers[0].state[p][key], optimizers[1].state[q][key]), key


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_plain_clipping_equals_clip_grad_norm(scale):
    from neurodecode.analysis.sae.training import _clip_grad_norm

    torch.manual_seed(4)
    clipped = [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(7))]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in clipped]
    for p, q in zip(clipped, plain, strict=True):
        p.grad = torch.randn_like(p) * scale
        q.grad = p.grad.clone()
    want = torch.nn.utils.clip_grad_norm_(clipped, 1.0)
    got = _clip_grad_norm(plain, 1.0)
    assert torch.equal(got, want)
    for p, q in zip(clipped, plain, strict=True):
        assert torch.equal(p.grad, q.grad)
    assert (want > 1.0) == (scale > 1e-2)  # both cases are exercised
