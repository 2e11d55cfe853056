"""MindEye1's diffusion prior (``BrainDiffusionPrior`` + ``VersatileDiffusionPriorNetwork``).

MindEye1 (MedARC-AI/fMRI-reconstruction-NSD, ``src/models.py``, trained by
``src/Train_MindEye.py``) denoises the 257 x 768 CLIP ViT-L/14 image tokens conditioned on the
brain network's ``lin1`` output (257 x 768 "brain tokens"). Its network is built on
dalle2-pytorch's transformer pieces; this module re-implements the same computation (eval mode,
no dropout) so that the ``net.*`` / ``noise_scheduler.*`` tensors of a MindEye1 checkpoint load
onto it under the same names (``net.`` stripped). Training defaults of ``Train_MindEye.py``
(``--hidden``): ``dim = 768``, ``depth = 6``, ``heads = 12``, ``dim_head = 64``,
``num_tokens = 257``, ``causal = False``, ``learned_query_mode = "pos_emb"``, 100 cosine-schedule
timesteps, ``predict_x_start = True``, ``image_embed_scale = sqrt(768)``, ``cond_drop_prob =
0.2``; ``num_timesteps`` of the network is unset, so time is embedded continuously.

Network forward, for noised image tokens ``x_t`` (B, N, D), step ``t`` (B,) and brain tokens
``c`` (B, N, D)::

    time  = MLP(sinusoidal(t))                    # (B, 1, D); MLP: Linear(D,2D) SiLU Linear(2D,2D) SiLU Linear(2D,D)
    seq   = cat(c, time, x_t + learned_query)     # (B, 2N+1, D)
    for each of depth layers:                     # no causal mask
        seq = attention(seq) + seq
        seq = feed_forward(seq) + seq
    out   = project_out(LN_stable(seq))[:, -N:]   # predicted x_0

``attention``: dalle2 ``LayerNorm`` (gain only, eps 1e-5) -> ``to_q`` (heads x dim_head) and
``to_kv`` (one shared key/value head of dim_head) -> rotary embedding on the first
``min(32, dim_head)`` features of q and k (interleaved pairs, theta 10000, positions 0..n-1) ->
a learned null key/value prepended -> cosine similarity x 16 plus a T5 relative position bias
(32 buckets, max distance 128; keys at or after the query share bucket 0) -> softmax -> values ->
``to_out`` (Linear then LayerNorm). ``feed_forward``: LayerNorm -> Linear(D, 8D) -> SwiGLU ->
Linear(4D, D). ``LN_stable`` divides by the row maximum before normalising. Classifier-free
guidance replaces ``c`` by ``null_brain_embeds`` and ``x_t`` by ``null_image_embed`` and returns
``null + scale * (cond - null)``.

Sampling is their DDPM loop (``BrainDiffusionPrior.p_sample_loop_ddpm``): start from
``randn(B, N, D)``, then for ``t = T-1 .. 0`` take ``x_0 = net(x_t, t, c)``, the posterior mean
``coef1[t] x_0 + coef2[t] x_t`` and add ``exp(logvar[t] / 2) * randn`` except at ``t = 0``; the
result is divided by ``image_embed_scale``. With the same generator the noise is drawn in their
order, so the same seed gives the same samples. The schedule buffers are the checkpoint's.

Differences: their forward reshapes tokens with a hard-coded width of 768 (ours uses ``dim``, the
same at MindEye1's size); DDIM sampling (fewer steps than the schedule) is not provided.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError

__all__ = [
    "MINDEYE1_PRIOR_SUBJ01",
    "SCHEDULE_BUFFERS",
    "MindEye1Prior",
    "mindeye1_prior_from_state",
    "mindeye1_prior_key_shapes",
]

#: ``Train_MindEye.py`` defaults with ``--hidden`` (ViT-L/14, 257 x 768 tokens).
MINDEYE1_PRIOR_SUBJ01 = {
    "dim": 768,
    "depth": 6,
    "heads": 12,
    "dim_head": 64,
    "num_tokens": 257,
    "ff_mult": 4,
    "timesteps": 100,
}

#: dalle2-pytorch ``NoiseScheduler`` buffers read from the checkpoint (each of length T).
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
_OPTIONAL_SCHEDULE = ("noise_scheduler.p2_loss_weight",)
_ROTARY_KEY = re.compile(r"net\.causal_transformer\.layers\.(\d+)\.0\.rotary_emb\.freqs")
_N_BUCKETS, _MAX_DISTANCE, _COSINE_SCALE = 32, 128, 16.0


def _gain_norm(x: Tensor, gain: Tensor, stable: bool = False) -> Tensor:
    """dalle2-pytorch's LayerNorm: no bias, eps 1e-5 (1e-3 below float32); ``stable`` divides by
    the row max first."""
    eps = 1e-5 if x.dtype == torch.float32 else 1e-3
    if stable:
        x = x / x.amax(dim=-1, keepdim=True)
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * gain


def _rotary_freqs(dim_head: int) -> Tensor:
    """rotary_embedding_torch's default frequencies for ``min(32, dim_head)`` rotated features."""
    rot = min(32, dim_head)
    return 1.0 / 10000.0 ** (torch.arange(0, rot, 2)[: rot // 2].float() / rot)


class _Norm(nn.Module):
    """Gain-only LayerNorm holding its parameter as ``g`` (dalle2-pytorch's name)."""

    def __init__(self, dim: int, stable: bool = False) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim))
        self.stable = stable

    def forward(self, x: Tensor) -> Tensor:
        return _gain_norm(x, self.g, self.stable)


class _TimeMLP(nn.Module):
    """Sinusoidal embedding of the (float) step, then the 3-layer SiLU MLP; keys ``net.{0.0,1.0,2}``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        hidden = 2 * dim
        self.net = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.SiLU()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU()),
            nn.Linear(hidden, dim),
        )

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        step = math.log(10000.0) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=t.dtype) * -step)
        angles = t[:, None] * freqs[None, :]
        return self.net(torch.cat((angles.sin(), angles.cos()), dim=-1).float())


class _Attention(nn.Module):
    """One prior attention block (keys ``null_kv``, ``norm.g``, ``to_q``, ``to_kv``, ``to_out``)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = _Norm(dim)
        self.null_kv = nn.Parameter(torch.zeros(2, dim_head))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), _Norm(dim))

    def forward(self, x: Tensor, bias: Tensor, rotate) -> Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k = rotate(q), rotate(k)
        k = torch.cat((self.null_kv[0].expand(b, 1, -1), k), dim=1)
        v = torch.cat((self.null_kv[1].expand(b, 1, -1), v), dim=1)
        q = F.normalize(q, dim=-1) * math.sqrt(_COSINE_SCALE)
        k = F.normalize(k, dim=-1) * math.sqrt(_COSINE_SCALE)
        sim = torch.einsum("bhid,bjd->bhij", q, k) + bias
        attn = sim.softmax(dim=-1, dtype=torch.float32).to(sim.dtype)
        out = torch.einsum("bhij,bjd->bhid", attn, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _SwiGLUFeedForward(nn.Module):
    """LayerNorm -> Linear(D, 2 mult D) -> SwiGLU -> Linear(mult D, D); keys ``0.g``, ``1``, ``5``."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        inner = mult * dim
        # indices follow dalle2-pytorch's Sequential (2: SwiGLU, 3: Identity, 4: Dropout)
        self.add_module("0", _Norm(dim))
        self.add_module("1", nn.Linear(dim, 2 * inner, bias=False))
        self.add_module("5", nn.Linear(inner, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        h, gate = getattr(self, "1")(getattr(self, "0")(x)).chunk(2, dim=-1)
        return getattr(self, "5")(h * F.silu(gate))


class _Transformer(nn.Module):
    """Relative-position-biased, rotary, non-causal transformer (``causal_transformer.*``)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.rel_pos_bias = nn.Module()
        self.rel_pos_bias.relative_attention_bias = nn.Embedding(_N_BUCKETS, heads)
        self.layers = nn.ModuleList(
            nn.ModuleList([_Attention(dim, heads, dim_head), _SwiGLUFeedForward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = _Norm(dim, stable=True)
        self.project_out = nn.Linear(dim, dim, bias=False)

    def position_bias(self, n: int, device) -> Tensor:
        """T5 bucketed bias (heads, n, n + 1) for n queries and the null key plus n keys."""
        rel = torch.arange(n + 1, device=device)[None, :] - torch.arange(n, device=device)[:, None]
        back = (-rel).clamp(min=0)
        exact = _N_BUCKETS // 2
        far = (
            exact
            + (
                torch.log(back.float().clamp(min=1) / exact)
                / math.log(_MAX_DISTANCE / exact)
                * (_N_BUCKETS - exact)
            ).long()
        )
        bucket = torch.where(back < exact, back, far.clamp(max=_N_BUCKETS - 1))
        return self.rel_pos_bias.relative_attention_bias(bucket).permute(2, 0, 1)

    def forward(self, x: Tensor, rotate) -> Tensor:
        bias = self.position_bias(x.shape[1], x.device)
        for attention, feed_forward in self.layers:
            x = attention(x, bias, rotate) + x
            x = feed_forward(x) + x
        return self.project_out(self.norm(x))


class MindEye1Prior(PretrainedMixin, nn.Module):
    """MindEye1's diffusion prior network with its noise schedule (see the module docstring).

    Parameters
    ----------
    dim, depth, heads, dim_head, num_tokens, ff_mult, timesteps : int
        Token width, layers, attention heads and head width, tokens per image embedding,
        feed-forward expansion, diffusion steps (:data:`MINDEYE1_PRIOR_SUBJ01`).
    image_embed_scale : float, optional
        Factor the training targets were multiplied by; ``None`` means ``sqrt(dim)``, as their
        ``image_embed_scale=None``.

    State dict keys are MindEye1's without ``net.``; the schedule buffers live under
    ``noise_scheduler.*`` and the rotary frequencies in ``rotary_freqs``.
    """

    def __init__(
        self,
        dim: int = 768,
        depth: int = 6,
        heads: int = 12,
        dim_head: int = 64,
        num_tokens: int = 257,
        ff_mult: int = 4,
        timesteps: int = 100,
        image_embed_scale: float | None = None,
    ) -> None:
        super().__init__()
        if dim < 4 or dim % 2 or min(depth, heads, dim_head, num_tokens, ff_mult, timesteps) < 1:
            raise InvalidInputError(
                f"MindEye1Prior: expected an even dim >= 4 and positive sizes; got dim={dim}, "
                f"depth={depth}, heads={heads}, dim_head={dim_head}, num_tokens={num_tokens}, "
                f"ff_mult={ff_mult}, timesteps={timesteps}."
            )
        self._config = {
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "dim_head": dim_head,
            "num_tokens": num_tokens,
            "ff_mult": ff_mult,
            "timesteps": timesteps,
            "image_embed_scale": image_embed_scale,
        }
        self.dim, self.num_tokens, self.timesteps = dim, num_tokens, timesteps
        self.image_embed_scale = float(image_embed_scale or dim**0.5)
        self.to_time_embeds = nn.Sequential(nn.Sequential(nn.Identity(), _TimeMLP(dim)))
        self.learned_query = nn.Parameter(torch.zeros(num_tokens, dim))
        self.causal_transformer = _Transformer(dim, depth, heads, dim_head, ff_mult)
        self.null_brain_embeds = nn.Parameter(torch.zeros(num_tokens, dim))
        self.null_image_embed = nn.Parameter(torch.zeros(num_tokens, dim))
        self.register_buffer("rotary_freqs", _rotary_freqs(dim_head))
        self.noise_scheduler = nn.Module()
        for name in SCHEDULE_BUFFERS:
            self.noise_scheduler.register_buffer(name, torch.zeros(timesteps))

    def get_config(self) -> dict:
        """Init arguments (plain JSON types)."""
        return dict(self._config)

    def _rotate(self, t: Tensor) -> Tensor:
        """Rotary embedding over the sequence axis (-2) on the first 2 x len(freqs) features."""
        rot = 2 * self.rotary_freqs.shape[0]
        pos = torch.arange(t.shape[-2], device=t.device, dtype=self.rotary_freqs.dtype)
        angles = (pos[:, None] * self.rotary_freqs[None, :]).repeat_interleave(2, dim=-1)
        head, tail = t[..., :rot], t[..., rot:]
        pairs = head.reshape(*head.shape[:-1], -1, 2)
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(head.shape)
        head = head * angles.cos().to(t.dtype) + turned * angles.sin().to(t.dtype)
        return torch.cat((head, tail), dim=-1)

    def _check(self, x_t: Tensor, t: Tensor, brain: Tensor) -> None:
        shape = (self.num_tokens, self.dim)
        for name, value in (("x_t", x_t), ("brain", brain)):
            if value.ndim != 3 or tuple(value.shape[1:]) != shape:
                raise InvalidInputError(
                    f"MindEye1Prior: {name} has shape {tuple(value.shape)}; expected "
                    f"(batch, {shape[0]}, {shape[1]})."
                )
        if brain.shape[0] != x_t.shape[0] or t.shape != (x_t.shape[0],):
            raise InvalidInputError(
                f"MindEye1Prior: batch sizes differ (x_t {x_t.shape[0]}, brain {brain.shape[0]},"
                f" t {tuple(t.shape)}); expected one step per row."
            )

    def forward(
        self, x_t: Tensor, t: Tensor, brain: Tensor, drop_condition: bool = False
    ) -> Tensor:
        """Predicted clean tokens ``x_0`` (B, num_tokens, dim) for noised tokens ``x_t``.

        ``t`` (B,) are step indices in ``[0, timesteps)``; ``brain`` (B, num_tokens, dim) is the
        brain network's ``lin1`` output. ``drop_condition`` replaces both the brain tokens and
        ``x_t`` by their learned null embeddings (their ``cond_drop_prob = 1``).
        """
        self._check(x_t, t, brain)
        if drop_condition:
            brain = self.null_brain_embeds.to(brain.dtype).expand_as(brain)
            x_t = self.null_image_embed.to(x_t.dtype).expand_as(x_t)
        time = self.to_time_embeds(t.to(x_t.dtype))[:, None, :]
        tokens = torch.cat((brain, time, x_t + self.learned_query), dim=1)
        out = self.causal_transformer(tokens, self._rotate)
        return out[:, -self.num_tokens :]

    def denoise(self, x_t: Tensor, t: Tensor, brain: Tensor, guidance_scale: float = 1.0) -> Tensor:
        """``x_0`` with classifier-free guidance (their ``forward_with_cond_scale``), (B, N, D)."""
        pred = self(x_t, t, brain)
        if guidance_scale == 1.0:
            return pred
        null = self(x_t, t, brain, drop_condition=True)
        return null + (pred - null) * guidance_scale

    @torch.no_grad()
    def sample(
        self,
        brain: Tensor,
        generator: torch.Generator | None = None,
        guidance_scale: float = 1.0,
    ) -> Tensor:
        """Image tokens (B, num_tokens, dim) sampled by their full DDPM loop, unscaled.

        Equals ``BrainDiffusionPrior.p_sample_loop(shape, dict(text_embed=brain),
        cond_scale=guidance_scale, generator=generator)`` for the same weights and generator
        state (noise drawn on ``brain``'s device, in their order).
        """
        b = brain.shape[0]
        sched = self.noise_scheduler
        shape = (b, self.num_tokens, self.dim)
        x = torch.randn(shape, device=brain.device, generator=generator)
        for i in reversed(range(self.timesteps)):
            t = torch.full((b,), i, device=brain.device, dtype=torch.long)
            x0 = self.denoise(x, t, brain, guidance_scale)
            mean = sched.posterior_mean_coef1[i] * x0 + sched.posterior_mean_coef2[i] * x
            noise = torch.randn(shape, device=brain.device, dtype=x.dtype, generator=generator)
            scale = (0.5 * sched.posterior_log_variance_clipped[i]).exp() if i > 0 else 0.0
            x = mean + scale * noise
        return x / self.image_embed_scale


def mindeye1_prior_key_shapes(
    dim: int = 768,
    depth: int = 6,
    heads: int = 12,
    dim_head: int = 64,
    num_tokens: int = 257,
    ff_mult: int = 4,
    timesteps: int = 100,
) -> dict[str, tuple[int, ...]]:
    """Every prior tensor of a MindEye1 ``BrainDiffusionPrior`` state dict, with its shape.

    Keys as saved (``net.*``, ``noise_scheduler.*``), rotary frequencies (one copy per layer, as
    ``state_dict`` lists the shared module) included; ``noise_scheduler.p2_loss_weight``, which
    some dalle2-pytorch versions save, is accepted but not listed. Nothing is allocated.
    """
    inner, ff, rot = heads * dim_head, ff_mult * dim, min(32, dim_head)
    table: dict[str, tuple[int, ...]] = {}
    mlp = "net.to_time_embeds.0.1.net"
    for key, shape in (
        ("0.0.weight", (2 * dim, dim)),
        ("0.0.bias", (2 * dim,)),
        ("1.0.weight", (2 * dim, 2 * dim)),
        ("1.0.bias", (2 * dim,)),
        ("2.weight", (dim, 2 * dim)),
        ("2.bias", (dim,)),
    ):
        table[f"{mlp}.{key}"] = shape
    table["net.learned_query"] = (num_tokens, dim)
    table["net.causal_transformer.rel_pos_bias.relative_attention_bias.weight"] = (
        _N_BUCKETS,
        heads,
    )
    for i in range(depth):
        layer = f"net.causal_transformer.layers.{i}"
        table[f"{layer}.0.null_kv"] = (2, dim_head)
        table[f"{layer}.0.norm.g"] = (dim,)
        table[f"{layer}.0.to_q.weight"] = (inner, dim)
        table[f"{layer}.0.to_kv.weight"] = (2 * dim_head, dim)
        table[f"{layer}.0.rotary_emb.freqs"] = (rot // 2,)
        table[f"{layer}.0.to_out.0.weight"] = (dim, inner)
        table[f"{layer}.0.to_out.1.g"] = (dim,)
        table[f"{layer}.1.0.g"] = (dim,)
        table[f"{layer}.1.1.weight"] = (2 * ff, dim)
        table[f"{layer}.1.5.weight"] = (dim, ff)
    table["net.causal_transformer.norm.g"] = (dim,)
    table["net.causal_transformer.project_out.weight"] = (dim, dim)
    table["net.null_brain_embeds"] = (num_tokens, dim)
    table["net.null_image_embed"] = (num_tokens, dim)
    for name in SCHEDULE_BUFFERS:
        table[f"noise_scheduler.{name}"] = (timesteps,)
    return table


def _our_prior_key(key: str) -> str:
    """Our state-dict key of a MindEye1 prior key (``net.`` stripped; freqs shared)."""
    if _ROTARY_KEY.fullmatch(key):
        return "rotary_freqs"
    return key[len("net.") :] if key.startswith("net.") else key


def _infer_prior_sizes(prior: Mapping[str, Tensor], source: str) -> dict[str, int]:
    """The network's sizes read off the tensor shapes."""
    needed = (
        "net.learned_query",
        "net.causal_transformer.layers.0.0.to_q.weight",
        "net.causal_transformer.layers.0.0.null_kv",
        "net.causal_transformer.layers.0.1.5.weight",
        "noise_scheduler.betas",
    )
    for key in needed:
        if key not in prior:
            raise InvalidInputError(
                f"{source}: missing prior tensor {key!r}; expected MindEye1's "
                "VersatileDiffusionPriorNetwork (learned_query_mode='pos_emb') and its noise "
                "schedule, e.g. net.learned_query of shape (257, 768)."
            )
    num_tokens, dim = (int(s) for s in prior["net.learned_query"].shape)
    dim_head = int(prior["net.causal_transformer.layers.0.0.null_kv"].shape[-1])
    inner = int(prior["net.causal_transformer.layers.0.0.to_q.weight"].shape[0])
    ff = int(prior["net.causal_transformer.layers.0.1.5.weight"].shape[-1])
    layers = [
        int(m[1]) for k in prior if (m := re.match(r"net\.causal_transformer\.layers\.(\d+)\.", k))
    ]
    if dim_head < 1 or inner % dim_head or dim < 1 or ff % dim:
        raise InvalidInputError(
            f"{source}: prior tensors have inconsistent widths (to_q {inner} outputs, head width "
            f"{dim_head}, feed-forward {ff}, dim {dim}); expected heads x dim_head outputs and a "
            "feed-forward width that is a multiple of dim."
        )
    return {
        "dim": dim,
        "depth": max(layers) + 1,
        "heads": inner // dim_head,
        "dim_head": dim_head,
        "num_tokens": num_tokens,
        "ff_mult": ff // dim,
        "timesteps": int(prior["noise_scheduler.betas"].shape[0]),
    }


def mindeye1_prior_from_state(
    prior: Mapping[str, Tensor], source: str = "checkpoint"
) -> MindEye1Prior:
    """A :class:`MindEye1Prior` (eval mode) holding a MindEye1 checkpoint's prior tensors.

    Parameters
    ----------
    prior : mapping
        The ``net.*`` and ``noise_scheduler.*`` tensors, keys as saved
        (:func:`~neurodecode.models.mindeye1.split_mindeye1_state`'s second output).
    source : str
        Where the tensors came from, for messages.

    Raises
    ------
    InvalidInputError
        The first missing or unexpected key, a tensor of the wrong shape (named with the
        expected shape), or per-layer rotary frequencies that differ.
    """
    sizes = _infer_prior_sizes(prior, source)
    expected = mindeye1_prior_key_shapes(**sizes)
    for key, shape in expected.items():
        if _ROTARY_KEY.fullmatch(key) and key not in prior:
            continue  # some rotary_embedding_torch versions keep freqs out of the state dict
        if key not in prior:
            raise InvalidInputError(
                f"{source}: missing prior tensor {key!r} of shape {shape} (MindEye1 prior with "
                f"{sizes})."
            )
        if tuple(prior[key].shape) != shape:
            raise InvalidInputError(
                f"{source}: prior tensor {key!r} has shape {tuple(prior[key].shape)}; expected "
                f"{shape} (MindEye1 prior with {sizes})."
            )
    for key in prior:
        if key not in expected and key not in _OPTIONAL_SCHEDULE:
            raise InvalidInputError(
                f"{source}: unexpected prior tensor {key!r} of shape {tuple(prior[key].shape)}; "
                f"a MindEye1 prior with {sizes} has no such key (only learned_query_mode="
                "'pos_emb' with continuous time embedding is supported)."
            )
    rotary = [prior[k] for k in expected if _ROTARY_KEY.fullmatch(k) and k in prior]
    if not all(r.is_meta or torch.equal(r, rotary[0]) for r in rotary):
        raise InvalidInputError(
            f"{source}: the layers' rotary_emb.freqs differ; expected one shared rotary embedding."
        )
    with torch.device("meta"):
        model = MindEye1Prior(**sizes)
    state = {
        _our_prior_key(k): prior[k].detach().to(torch.float32)
        for k in expected
        if not _ROTARY_KEY.fullmatch(k)
    }
    state["rotary_freqs"] = (
        rotary[0].detach().to(torch.float32)
        if rotary
        else _rotary_freqs(sizes["dim_head"]).to(model.rotary_freqs.dtype)
    )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
