"""MindEye1's released ``BrainNetwork`` weights as a :class:`~neurodecode.models.retrieval.RetrievalModule`.

MindEye1 (Scotti et al. 2023, MedARC-AI/fMRI-reconstruction-NSD, ``src/models.py``) saves its
high-level model as ``torch.save({"epoch", "model_state_dict", "optimizer_state_dict",
"lr_scheduler", "train_losses", "test_losses", "lrs"}, "last.pth")``. ``model_state_dict`` is the
state dict of ``BrainDiffusionPrior`` (a dalle2-pytorch ``DiffusionPrior``) holding the brain
network under ``voxel2clip.`` and the prior's transformer under ``net.`` (plus the noise
schedule's buffers). A checkpoint of ``BrainNetwork`` alone (``train_voxel2clip*.py``) has the
same keys without the ``voxel2clip.`` prefix; a DDP run may add ``module.``.

``BrainNetwork(in_dim=V, out_dim=257*768, clip_size=768, h=4096, n_blocks=4, norm_type="ln",
act_first=False, use_projector=True)`` is, in eval mode::

    x = lin0(voxels)              # Linear(V, h) -> LayerNorm(h) -> GELU -> Dropout(0.5)
    for block in mlp:             # Linear(h, h) -> LayerNorm(h) -> GELU -> Dropout(0.15)
        x = block(x) + x
    backbone = lin1(x)            # Linear(h, 257*768): the prior's condition
    retrieval = projector(backbone.reshape(B, -1, 768))   # per token, LN/GELU/Linear x 3

which is our :class:`RetrievalModule` with one subject: ``adapters.<subject>`` is ``lin0.0``,
``backbone.input.0`` is ``lin0.1``, ``backbone.blocks.i.{0,1}`` are ``mlp.i.{0,1}``,
``backbone.head`` is ``lin1`` and ``projector.net.k`` is ``projector.k``. GELU (exact erf),
LayerNorm (eps 1e-5) and the residual order are the same, so converted weights give the same
outputs (:data:`KEY_MAP`, :func:`mindeye1_key_shapes`, :func:`retrieval_module_from_mindeye1`).

The diffusion prior (``net.*`` + ``noise_scheduler.*``: dalle2-pytorch's transformer with rotary
embeddings, relative position bias, null key/values and SwiGLU feed-forward, depth 6, 12 heads x 64,
``learned_query_mode="pos_emb"``) is a different network from our
:class:`~neurodecode.models.prior.DiffusionPrior`; it is re-implemented separately as
:class:`~neurodecode.models.mindeye1_prior.MindEye1Prior`. :func:`split_mindeye1_state` separates
its tensors from the brain network's.

MindEye2 (Scotti et al. 2024, MedARC-AI/MindEyeV2 ``src/Train.py`` + ``src/models.py``) differs,
and its checkpoints are refused here (their keys are not MindEye1's):

- per-subject ``ridge.linears.<i>`` (``Linear(V_s, 4096)``) into a shared latent, applied to a
  sequence axis (``seq_len`` trials) — our adapters are the same idea without the sequence axis;
- ``backbone``: an MLP-mixer (``mixer_blocks1`` channel-mixing and ``mixer_blocks2``
  token-mixing blocks over ``seq_len``) instead of MindEye1's residual MLP, then
  ``backbone_linear`` ``Linear(4096 * seq_len, 256 * 1664)``;
- targets are 256 x 1664 OpenCLIP ViT-bigG/14 patch tokens (no class token, after ``ln_post``,
  not projected) instead of 257 x 768 projected ViT-L/14 tokens;
- ``clip_proj`` projector per token on 1664-d tokens; a low-level head (``blin1``, ``bnorm``,
  ``bupsampler``: a diffusers ``Decoder`` to 4 x 28 x 28 SD-VAE latents, and ``b_maps_projector``
  for the ConvNeXt contrastive loss);
- prior ``PriorNetwork`` with 256 tokens of 1664, depth 6, 32 heads x 52, 100 timesteps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from neurodecode.models.retrieval import RetrievalModule
from neurodecode.validation import InvalidInputError

__all__ = [
    "MINDEYE1_SUBJ01",
    "convert_mindeye1_state",
    "mindeye1_key_shapes",
    "retrieval_module_from_mindeye1",
    "split_mindeye1_state",
]

#: MindEye1's subj01 geometry: 15724 nsdgeneral voxels -> 257 x 768 ViT-L/14 tokens.
MINDEYE1_SUBJ01 = {
    "n_voxels": 15724,
    "hidden_dim": 4096,
    "n_blocks": 4,
    "n_tokens": 257,
    "clip_dim": 768,
    "projector_dim": 2048,
}

_PROJECTOR_LAYERS = {0: "norm", 2: "linear", 3: "norm", 5: "linear", 6: "norm", 8: "linear"}
_PRIOR_PREFIXES = ("net.", "noise_scheduler.")


def mindeye1_key_shapes(
    n_voxels: int = 15724,
    hidden_dim: int = 4096,
    n_blocks: int = 4,
    n_tokens: int = 257,
    clip_dim: int = 768,
    projector_dim: int = 2048,
) -> dict[str, tuple[int, ...]]:
    """Every tensor of MindEye1's ``BrainNetwork`` (``voxel2clip.`` stripped) with its shape.

    Parameters are ``BrainNetwork``'s constructor arguments: ``in_dim = n_voxels``,
    ``h = hidden_dim``, ``n_blocks``, ``out_dim = n_tokens * clip_dim``, ``clip_size = clip_dim``;
    ``projector_dim`` is the projector width (2048 in their code). The defaults are subj01's:
    about 948 M parameters. Nothing is allocated.

    Returns
    -------
    dict
        Key -> shape, in ``state_dict`` order.
    """
    h, d, p = hidden_dim, clip_dim, projector_dim
    table: dict[str, tuple[int, ...]] = {
        "lin0.0.weight": (h, n_voxels),
        "lin0.0.bias": (h,),
        "lin0.1.weight": (h,),
        "lin0.1.bias": (h,),
    }
    for i in range(n_blocks):
        table[f"mlp.{i}.0.weight"] = (h, h)
        table[f"mlp.{i}.0.bias"] = (h,)
        table[f"mlp.{i}.1.weight"] = (h,)
        table[f"mlp.{i}.1.bias"] = (h,)
    table["lin1.weight"] = (n_tokens * d, h)
    table["lin1.bias"] = (n_tokens * d,)
    sizes = {0: (d,), 2: (p, d), 3: (p,), 5: (p, p), 6: (p,), 8: (d, p)}
    for k, kind in _PROJECTOR_LAYERS.items():
        out = sizes[k][0]
        table[f"projector.{k}.weight"] = sizes[k]
        table[f"projector.{k}.bias"] = (out,) if kind == "linear" else sizes[k]
    return table


def _our_key(key: str, subject: str) -> str:
    """The RetrievalModule key of a BrainNetwork key (``voxel2clip.`` stripped)."""
    name = key.rsplit(".", 1)[-1]
    if key.startswith("lin0.0."):
        return f"adapters.{subject}.{name}"
    if key.startswith("lin0.1."):
        return f"backbone.input.0.{name}"
    if key.startswith("lin1."):
        return f"backbone.head.{name}"
    match = re.fullmatch(r"mlp\.(\d+)\.([01])\.(weight|bias)", key)
    if match:
        return f"backbone.blocks.{match[1]}.{match[2]}.{match[3]}"
    match = re.fullmatch(r"projector\.(\d+)\.(weight|bias)", key)
    if match:
        return f"projector.net.{match[1]}.{match[2]}"
    raise KeyError(key)


def split_mindeye1_state(
    state: Mapping[str, Tensor], source: str = "checkpoint"
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a MindEye1 state dict into its ``BrainNetwork`` tensors and its prior tensors.

    ``module.`` (DDP) and ``voxel2clip.`` prefixes are removed from the brain network's keys.

    Returns
    -------
    brain : dict
        ``lin0.*``, ``mlp.*``, ``lin1.*``, ``projector.*`` tensors.
    prior : dict
        ``net.*`` and ``noise_scheduler.*`` tensors (the dalle2-pytorch prior), keys as found.

    Raises
    ------
    InvalidInputError
        A key that belongs to neither (named, with the expected key forms).
    """
    brain: dict[str, Tensor] = {}
    prior: dict[str, Tensor] = {}
    for raw, tensor in state.items():
        key = raw[len("module.") :] if raw.startswith("module.") else raw
        if key.startswith(_PRIOR_PREFIXES):
            prior[key] = tensor
            continue
        key = key[len("voxel2clip.") :] if key.startswith("voxel2clip.") else key
        if not key.startswith(("lin0.", "mlp.", "lin1.", "projector.")):
            raise InvalidInputError(
                f"{source}: unexpected tensor {raw!r} (shape {tuple(tensor.shape)}); expected "
                "MindEye1 BrainNetwork keys voxel2clip.{lin0,mlp,lin1,projector}.* and prior "
                "keys net.* / noise_scheduler.*."
            )
        brain[key] = tensor
    return brain, prior


def _infer_sizes(brain: Mapping[str, Tensor], source: str) -> dict[str, int]:
    """BrainNetwork's constructor arguments read off the tensor shapes."""
    for key in ("lin0.0.weight", "lin1.weight", "projector.0.weight", "projector.2.weight"):
        if key not in brain:
            raise InvalidInputError(
                f"{source}: missing tensor {key!r}; expected a MindEye1 BrainNetwork with a "
                "projector (use_projector=True), e.g. voxel2clip.lin0.0.weight of shape "
                f"(4096, 15724)."
            )
    hidden, n_voxels = (int(s) for s in brain["lin0.0.weight"].shape)
    clip_dim = int(brain["projector.0.weight"].shape[0])
    projector_dim = int(brain["projector.2.weight"].shape[0])
    out_dim = int(brain["lin1.weight"].shape[0])
    if clip_dim < 1 or out_dim % clip_dim:
        raise InvalidInputError(
            f"{source}: lin1.weight has {out_dim} outputs, not a multiple of the token width "
            f"{clip_dim} (projector.0.weight); expected (n_tokens * {clip_dim}, {hidden})."
        )
    blocks = [int(m[1]) for k in brain if (m := re.match(r"mlp\.(\d+)\.", k))]
    return {
        "n_voxels": n_voxels,
        "hidden_dim": hidden,
        "n_blocks": max(blocks) + 1 if blocks else 0,
        "n_tokens": out_dim // clip_dim,
        "clip_dim": clip_dim,
        "projector_dim": projector_dim,
    }


def convert_mindeye1_state(
    brain: Mapping[str, Tensor], subject: str = "subj01", source: str = "checkpoint"
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Map BrainNetwork tensors (from :func:`split_mindeye1_state`) to RetrievalModule keys.

    Every key of :func:`mindeye1_key_shapes` (for the sizes read off the tensors) must be present
    with its shape, and no other.

    Returns
    -------
    state : dict
        RetrievalModule state dict (float32 tensors).
    sizes : dict
        ``n_voxels``, ``hidden_dim``, ``n_blocks``, ``n_tokens``, ``clip_dim``,
        ``projector_dim``.

    Raises
    ------
    InvalidInputError
        The first missing or unexpected key, or a tensor of the wrong shape, named with the
        expected shape.
    """
    sizes = _infer_sizes(brain, source)
    expected = mindeye1_key_shapes(**sizes)
    for key, shape in expected.items():
        if key not in brain:
            raise InvalidInputError(
                f"{source}: missing tensor 'voxel2clip.{key}' of shape {shape} (a MindEye1 "
                f"BrainNetwork with {sizes})."
            )
        if tuple(brain[key].shape) != shape:
            raise InvalidInputError(
                f"{source}: tensor 'voxel2clip.{key}' has shape {tuple(brain[key].shape)}; "
                f"expected {shape} (a MindEye1 BrainNetwork with {sizes})."
            )
    for key in brain:
        if key not in expected:
            raise InvalidInputError(
                f"{source}: unexpected tensor 'voxel2clip.{key}' of shape "
                f"{tuple(brain[key].shape)}; a MindEye1 BrainNetwork with {sizes} has no such key "
                "(norm_type='bn' and act_first=True variants are not supported)."
            )
    state = {_our_key(k, subject): brain[k].detach().to(torch.float32) for k in expected}
    return state, sizes


def retrieval_module_from_mindeye1(
    brain: Mapping[str, Tensor], subject: str = "subj01", source: str = "checkpoint"
) -> RetrievalModule:
    """A RetrievalModule (no prior, eval mode) holding MindEye1 BrainNetwork weights.

    Its :meth:`~RetrievalModule.forward` returns ``(backbone, retrieval)`` of shape
    ``(B, n_tokens, clip_dim)`` each, equal to MindEye1's ``(lin1 output reshaped, projector
    output)``. The model is built on the ``meta`` device and the tensors assigned, so the
    weights are not held twice (subj01: 948 M parameters, 3.8 GB in float32).

    Parameters
    ----------
    brain : mapping
        BrainNetwork tensors, ``voxel2clip.`` stripped (:func:`split_mindeye1_state`).
    subject : str
        Subject name in the model's geometry.
    source : str
        Where the tensors came from, for messages.
    """
    state, sizes = convert_mindeye1_state(brain, subject, source)
    geometry = {
        "n_voxels": {subject: sizes["n_voxels"]},
        "target_shape": [sizes["n_tokens"], sizes["clip_dim"]],
    }
    with torch.device("meta"):
        model = RetrievalModule(
            geometry=geometry,
            hidden_dim=sizes["hidden_dim"],
            n_blocks=sizes["n_blocks"],
            projector_dim=sizes["projector_dim"],
            prior=None,
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
