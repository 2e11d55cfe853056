"""MindEye1's diffusion prior converted: same outputs as their network for the same weights.

The reference below re-derives MindEye1's ``VersatileDiffusionPriorNetwork.forward`` (dalle2-pytorch
attention with null key/value, cosine similarity x 16, T5 bucketed bias, rotary embedding, SwiGLU,
stable final LayerNorm; eval mode) and ``BrainDiffusionPrior.p_sample_loop_ddpm`` directly on the
raw state dict at their key names, written differently from the module (per-head loops, complex
rotation, a scalar bucket function, ``F.layer_norm``), so it shares no code with it. The schedule
is dalle2-pytorch's cosine schedule computed here in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import neurodecode
from neurodecode.cli.main import main
from neurodecode.models.mindeye1_prior import (
    MINDEYE1_PRIOR_SUBJ01,
    MindEye1Prior,
    mindeye1_prior_from_state,
    mindeye1_prior_key_shapes,
)
from neurodecode.validation import InvalidInputError
from tests.models.test_mindeye1 import random_brain_state, reference_forward

# 12 tokens -> a 25-token sequence, so distances past the 16 exact buckets are exercised;
# dim_head 40 > 32 leaves 8 features per head unrotated.
BRAIN = {
    "n_voxels": 30,
    "hidden_dim": 16,
    "n_blocks": 2,
    "n_tokens": 12,
    "clip_dim": 8,
    "projector_dim": 10,
}
PRIOR = {
    "dim": 8,
    "depth": 2,
    "heads": 2,
    "dim_head": 40,
    "num_tokens": 12,
    "ff_mult": 4,
    "timesteps": 7,
}


def cosine_schedule(steps: int) -> dict[str, torch.Tensor]:
    """dalle2-pytorch NoiseScheduler buffers for the cosine schedule (s = 0.008)."""
    x = torch.arange(steps + 1, dtype=torch.float64) / steps
    bar = torch.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2
    bar = bar / bar[0]
    betas = (1 - bar[1:] / bar[:-1]).clamp(0, 0.999)
    ac = torch.cumprod(1 - betas, 0)
    prev = torch.cat((torch.ones(1, dtype=torch.float64), ac[:-1]))
    post = betas * (1 - prev) / (1 - ac)
    out = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
        "posterior_variance": post,
        "posterior_log_variance_clipped": post.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1 - ac),
        "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - ac),
        "p2_loss_weight": torch.ones(steps, dtype=torch.float64),
    }
    return {f"noise_scheduler.{k}": v.float() for k, v in out.items()}


def random_prior_state(seed: int = 0, **sizes) -> dict[str, torch.Tensor]:
    """Prior tensors at MindEye1's key names, random (gains around 1), real schedule buffers."""
    gen = torch.Generator().manual_seed(seed)
    dh = sizes["dim_head"]
    freqs = 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32) if dh >= 32 else None
    state = {}
    for key, shape in mindeye1_prior_key_shapes(**sizes).items():
        if key.startswith("noise_scheduler."):
            continue
        if key.endswith("rotary_emb.freqs"):
            state[key] = freqs.clone()
            continue
        value = torch.randn(shape, generator=gen)
        if key.endswith(".g"):
            value = 1.0 + 0.3 * value
        elif len(shape) == 2 and "weight" in key and "relative" not in key:
            value = value / math.sqrt(shape[1])
        state[key] = value
    state.update(cosine_schedule(sizes["timesteps"]))
    return state


def _bucket(back: int) -> int:
    """T5 bucket of a key ``back`` positions before its query (32 buckets, max distance 128)."""
    if back < 16:
        return back
    return min(31, 16 + int(math.log(back / 16) / math.log(128 / 16) * 16))


def reference_net(sd, x_t, t, brain, heads, drop=False):
    """VersatileDiffusionPriorNetwork.forward (pos_emb, causal=False, eval) on their keys."""
    p = "net."
    dim = x_t.shape[-1]
    n_tok = x_t.shape[1]
    if drop:
        brain = sd[p + "null_brain_embeds"].expand_as(brain)
        x_t = sd[p + "null_image_embed"].expand_as(x_t)

    def ln(x, g):
        return F.layer_norm(x, (x.shape[-1],), weight=g, eps=1e-5)

    half = dim // 2
    freqs = torch.exp(-math.log(10000) / (half - 1) * torch.arange(half, dtype=torch.float32))
    ang = t.float()[:, None] * freqs
    emb = torch.cat((torch.sin(ang), torch.cos(ang)), -1)
    m = p + "to_time_embeds.0.1.net."
    emb = F.silu(emb @ sd[m + "0.0.weight"].T + sd[m + "0.0.bias"])
    emb = F.silu(emb @ sd[m + "1.0.weight"].T + sd[m + "1.0.bias"])
    emb = emb @ sd[m + "2.weight"].T + sd[m + "2.bias"]
    x = torch.cat((brain, emb[:, None], x_t + sd[p + "learned_query"]), 1)
    n = x.shape[1]
    table = sd[p + "causal_transformer.rel_pos_bias.relative_attention_bias.weight"]
    bias = torch.empty(heads, n, n + 1)
    for i in range(n):
        for j in range(n + 1):
            bias[:, i, j] = table[_bucket(max(i - j, 0))]
    depth = 1 + max(int(k.split(".")[3]) for k in sd if ".layers." in k)
    for layer in range(depth):
        a = f"{p}causal_transformer.layers.{layer}.0."
        f = f"{p}causal_transformer.layers.{layer}.1."
        h = ln(x, sd[a + "norm.g"])
        q_all = h @ sd[a + "to_q.weight"].T
        kv = h @ sd[a + "to_kv.weight"].T
        dh = kv.shape[-1] // 2
        k, v = kv[..., :dh], kv[..., dh:]

        def rot(z, fr=sd[a + "rotary_emb.freqs"]):
            r = 2 * fr.shape[0]
            theta = torch.arange(n, dtype=torch.float32)[:, None] * fr
            zc = torch.view_as_complex(z[..., :r].reshape(*z.shape[:-1], -1, 2).contiguous())
            turned = torch.view_as_real(zc * torch.polar(torch.ones_like(theta), theta))
            return torch.cat((turned.flatten(-2), z[..., r:]), -1)

        k = rot(k)
        k = torch.cat((sd[a + "null_kv"][0].expand(len(x), 1, dh), k), 1)
        v = torch.cat((sd[a + "null_kv"][1].expand(len(x), 1, dh), v), 1)
        outs = []
        for head in range(heads):
            q = rot(q_all[..., head * dh : (head + 1) * dh])
            sim = 16 * F.cosine_similarity(q[:, :, None], k[:, None], dim=-1) + bias[head]
            outs.append(torch.softmax(sim, -1) @ v)
        att = ln(torch.cat(outs, -1) @ sd[a + "to_out.0.weight"].T, sd[a + "to_out.1.g"])
        x = x + att
        u, gate = (ln(x, sd[f + "0.g"]) @ sd[f + "1.weight"].T).chunk(2, -1)
        x = x + (u * gate * torch.sigmoid(gate)) @ sd[f + "5.weight"].T
    x = x / x.max(-1, keepdim=True).values
    x = (
        ln(x, sd[p + "causal_transformer.norm.g"])
        @ sd[p + "causal_transformer.project_out.weight"].T
    )
    return x[:, -n_tok:]


def reference_sample(sd, brain, heads, generator, scale):
    """BrainDiffusionPrior.p_sample_loop(...) with cond_scale ``scale``, then / sqrt(dim)."""
    s = "noise_scheduler."
    steps = sd[s + "betas"].shape[0]
    x = torch.randn(brain.shape, generator=generator)
    for i in range(steps - 1, -1, -1):
        t = torch.full((len(x),), i, dtype=torch.long)
        cond = reference_net(sd, x, t, brain, heads)
        null = reference_net(sd, x, t, brain, heads, drop=True)
        x0 = null + (cond - null) * scale
        mean = sd[s + "posterior_mean_coef1"][i] * x0 + sd[s + "posterior_mean_coef2"][i] * x
        noise = torch.randn(x.size(), generator=generator)
        keep = 0.0 if i == 0 else 1.0
        x = mean + keep * torch.exp(0.5 * sd[s + "posterior_log_variance_clipped"][i]) * noise
    return x / math.sqrt(brain.shape[-1])


def write_checkpoint(path, brain, prior):
    state = {"voxel2clip." + k: v for k, v in brain.items()} | prior
    torch.save({"epoch": 239, "model_state_dict": state, "lrs": [3e-4]}, path)
    return path


def test_full_size_prior_table_matches_module_on_meta():
    table = mindeye1_prior_key_shapes(**MINDEYE1_PRIOR_SUBJ01)
    assert table["net.learned_query"] == (257, 768)
    assert table["net.causal_transformer.layers.5.0.to_q.weight"] == (768, 768)
    assert table["net.causal_transformer.layers.5.0.to_kv.weight"] == (128, 768)
    assert table["net.causal_transformer.layers.5.1.1.weight"] == (6144, 768)
    assert table["net.causal_transformer.rel_pos_bias.relative_attention_bias.weight"] == (32, 12)
    assert table["noise_scheduler.posterior_mean_coef1"] == (100,)
    assert "net.causal_transformer.layers.6.0.norm.g" not in table
    with torch.device("meta"):
        ours = MindEye1Prior(**MINDEYE1_PRIOR_SUBJ01)
    fake = {k: torch.empty(s, device="meta") for k, s in table.items()}
    model = mindeye1_prior_from_state(fake)
    assert model.get_config() == ours.get_config()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }
    # parameters: 6 x (attention 768*768*2 + 128*768 + 2*64 + 2*768, ff 6144*768 + 768*3072 + 768)
    per_layer = 2 * 768 * 768 + 128 * 768 + 128 + 2 * 768 + 6144 * 768 + 768 * 3072 + 768
    time_mlp = 768 * 1536 + 1536 + 1536 * 1536 + 1536 + 1536 * 768 + 768
    rest = 3 * 257 * 768 + 32 * 12 + 768 + 768 * 768
    assert sum(p.numel() for p in ours.parameters()) == 6 * per_layer + time_mlp + rest


def test_convert_cli_keeps_prior_and_matches_reference(tmp_path):
    brain = random_brain_state(**BRAIN)
    prior = random_prior_state(**PRIOR)
    ckpt = write_checkpoint(tmp_path / "last.pth", brain, prior)
    out = tmp_path / "decoder"
    assert main(["convert", "mindeye1", str(ckpt), "--out", str(out)]) == 0
    config = neurodecode.pretrained.read_config(out)
    assert config["metadata"]["prior"] == "converted (prior/)"
    decoder = neurodecode.load_pretrained(out)
    model = neurodecode.load_pretrained(out / "prior")
    assert isinstance(model, MindEye1Prior)

    gen = torch.Generator().manual_seed(3)
    voxels = torch.randn(3, BRAIN["n_voxels"], generator=gen)
    backbone = decoder.embed(voxels, "subj01", output="backbone")
    ref_backbone, _ = reference_forward(brain, voxels, BRAIN["clip_dim"])
    torch.testing.assert_close(backbone.reshape(3, -1), ref_backbone, atol=1e-5, rtol=1e-5)
    x_t = 3 * torch.randn(3, PRIOR["num_tokens"], PRIOR["dim"], generator=gen)
    t = torch.tensor([0, 4, 6])
    sd = {k: v for k, v in prior.items()}
    with torch.no_grad():
        ours = model(x_t, t, backbone)
        ours_null = model(x_t, t, backbone, drop_condition=True)
        guided = model.denoise(x_t, t, backbone, guidance_scale=3.5)
    ref = reference_net(sd, x_t, t, backbone, PRIOR["heads"])
    ref_null = reference_net(sd, x_t, t, backbone, PRIOR["heads"], drop=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_null, ref_null, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided, ref_null + 3.5 * (ref - ref_null), atol=1e-5, rtol=1e-5)
    assert (ours - ours_null).abs().max() > 0.1  # the condition matters

    # the same seed gives the same samples; 7 steps accumulate float32 rounding, which differs
    # between CPUs (1.2e-5 on one element of 288 on an AMD EPYC unguided), and guidance amplifies
    # it x 3.5 per step: the loops are compared at 5e-5 and 1e-4 (a wrong term is off by ~1e-1)
    for scale, tol in ((1.0, 5e-5), (3.5, 1e-4)):
        samples = model.sample(backbone, torch.Generator().manual_seed(7), guidance_scale=scale)
        gen = torch.Generator().manual_seed(7)
        expected = reference_sample(sd, backbone, PRIOR["heads"], gen, scale)
        assert samples.shape == (3, PRIOR["num_tokens"], PRIOR["dim"])
        torch.testing.assert_close(samples, expected, atol=tol, rtol=tol)

    # --drop-prior over the same folder leaves no stale prior behind
    assert main(["convert", "mindeye1", str(ckpt), "--out", str(out), "--drop-prior"]) == 0
    assert not (out / "prior").exists()
    assert neurodecode.pretrained.read_config(out)["metadata"]["prior"] == "dropped"


def test_rotary_freqs_absent_from_state_are_the_default():
    prior = random_prior_state(**PRIOR)
    without = {k: v for k, v in prior.items() if not k.endswith("rotary_emb.freqs")}
    a, b = mindeye1_prior_from_state(prior), mindeye1_prior_from_state(without)
    torch.testing.assert_close(a.rotary_freqs, b.rotary_freqs, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ("shape", "has shape (4, 8); expected (8, 8)"),
        ("missing", "missing prior tensor 'net.null_image_embed'"),
        ("extra", "unexpected prior tensor 'net.null_text_embeds'"),
    ],
)
def test_bad_prior_refused_in_one_line_and_nothing_written(tmp_path, capsys, edit, needle):
    prior = random_prior_state(**PRIOR)
    if edit == "shape":
        prior["net.causal_transformer.project_out.weight"] = torch.zeros(4, 8)
    elif edit == "missing":
        del prior["net.null_image_embed"]
    else:
        prior["net.null_text_embeds"] = torch.zeros(1, 1, 8)
    ckpt = write_checkpoint(tmp_path / "last.pth", random_brain_state(**BRAIN), prior)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "mindeye1", str(ckpt), "--out", str(tmp_path / "d")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err and "--drop-prior" in err
    assert not (tmp_path / "d").exists()


def test_prior_input_shapes_checked():
    model = mindeye1_prior_from_state(random_prior_state(**PRIOR))
    x = torch.zeros(2, PRIOR["num_tokens"], PRIOR["dim"])
    with pytest.raises(InvalidInputError, match=r"brain has shape \(2, 12, 7\)"):
        model(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, 12, 7))
    with pytest.raises(InvalidInputError, match="one step per row"):
        model(x, torch.zeros(3, dtype=torch.long), x)
