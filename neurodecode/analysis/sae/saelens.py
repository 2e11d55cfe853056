"""SAELens's folder format (``cfg.json`` + ``sae_weights.safetensors``): export ours, read theirs.

SAELens computes, for ``apply_b_dec_to_input=True`` and ``normalize_activations="none"``::

    pre = (x - b_dec) @ W_enc + b_enc          # W_enc (d_in, d_sae), b_enc (d_sae,)
    z = act(pre)                               # standard: relu; topk: k largest, relu'd;
                                               # jumprelu: relu(pre) * (pre > threshold)
    x_hat = z @ W_dec + b_dec                  # W_dec (d_sae, d_in), b_dec (d_in,)

Ours works on inputs scaled by ``input_scale`` s (``normalize_activations=True``), so the export
folds s in: ``W_enc' = s W_enc``, ``W_dec' = W_dec / s``, ``b_dec' = b_dec / s`` — the latents
are unchanged and ``x_hat`` is in raw units. Exported: ``relu_l1`` (as ``standard``), ``topk``,
``jumprelu``, and ``batchtopk`` (its inference rule is a threshold shared by all latents, so it is
written as ``jumprelu`` with that threshold per latent). Transcoders, skip connections and gated
SAEs are refused (no SAELens counterpart here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from neurodecode.analysis.sae.core import SparseAutoencoder, create_sae
from neurodecode.pretrained import atomic_folder
from neurodecode.validation import InvalidInputError

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_ARCHITECTURE = {
    "relu_l1": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
}


@torch.no_grad()
def export_saelens(
    sae: SparseAutoencoder,
    folder: str | Path,
    hook_name: str = "",
    model_name: str = "",
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``sae`` as a SAELens folder (atomically; an existing folder is replaced).

    Parameters
    ----------
    sae : SparseAutoencoder
        ``relu_l1``, ``topk``, ``jumprelu`` or ``batchtopk``, not a transcoder.
    folder : path
    hook_name, model_name : str
        Where the activations came from (SAELens's ``hook_name`` / ``model_name`` fields), e.g.
        ``"visual.transformer.resblocks.11"`` and ``"ViT-L-14"``.
    extra_config : dict, optional
        More ``cfg.json`` fields (``dataset_path``, ``context_size`` ...).

    Returns
    -------
    Path
        The folder.
    """
    if sae.architecture not in _ARCHITECTURE:
        raise InvalidInputError(
            f"SAELens export supports {sorted(_ARCHITECTURE)} SAEs; got {sae.architecture!r}."
        )
    if sae.transcoder or sae.skip_connection:
        raise InvalidInputError("SAELens export takes SAEs, not transcoders or skip connections.")
    s = float(sae.input_scale)
    weights = {
        "W_enc": (sae.W_enc * s).float().contiguous().cpu(),
        "b_enc": sae.b_enc.float().contiguous().cpu(),
        "W_dec": (sae.W_dec / s).float().contiguous().cpu(),
        "b_dec": (sae.b_dec / s).float().contiguous().cpu(),
    }
    architecture = _ARCHITECTURE[sae.architecture]
    config: dict[str, Any] = {
        "architecture": architecture,
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "hook_name": hook_name,
        "model_name": model_name,
        "activation_fn": "relu",
        "activation_fn_kwargs": {},
        "neurodecode_architecture": sae.architecture,
    }
    if sae.architecture == "topk":
        config["k"] = int(sae.options["k"])
        config["activation_fn"] = "topk"
        config["activation_fn_kwargs"] = {"k": int(sae.options["k"])}
    elif sae.architecture == "jumprelu":
        weights["threshold"] = sae.threshold.float().contiguous().cpu()
    elif sae.architecture == "batchtopk":
        if float(sae.threshold) < 0:
            raise InvalidInputError(
                "this BatchTopK SAE has no inference threshold yet (train it first)."
            )
        weights["threshold"] = torch.full((sae.n_latents,), float(sae.threshold))
    config.update(extra_config or {})
    from safetensors.torch import save_file

    with atomic_folder(folder, replace=True) as tmp:
        save_file(weights, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return Path(folder)


def read_saelens(folder: str | Path) -> SparseAutoencoder:
    """Open a SAELens folder (``standard``, ``topk`` or ``jumprelu``) as one of our SAEs.

    Returns
    -------
    SparseAutoencoder
        ``relu_l1``, ``topk`` or ``jumprelu`` with ``input_scale`` 1, in eval mode; its
        ``encode``/``forward`` give SAELens's latents and reconstruction.
    """
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise InvalidInputError(f"{folder} is not a SAELens folder: {path.name} is missing.")
    try:
        config = json.loads(config_path.read_text())
        from safetensors.torch import load_file

        weights = load_file(str(weights_path))
    except Exception as err:
        raise InvalidInputError(f"cannot read the SAELens folder {folder}: {err}") from err
    architecture = config.get("architecture", "standard")
    if architecture == "standard" and config.get("activation_fn") == "topk":
        architecture = "topk"  # older SAELens: TopK as a standard SAE's activation function
    if config.get("normalize_activations", "none") not in ("none", None):
        raise InvalidInputError(
            f"{config_path}: normalize_activations={config['normalize_activations']!r} is not "
            "supported; expected 'none'."
        )
    try:
        d_in, d_sae = int(config["d_in"]), int(config["d_sae"])
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInputError(f"{config_path} lacks d_in/d_sae: {err}") from err
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "jumprelu":
        expected["threshold"] = (d_sae,)
    for name, shape in expected.items():
        if name not in weights or tuple(weights[name].shape) != shape:
            found = tuple(weights[name].shape) if name in weights else "missing"
            raise InvalidInputError(
                f"{weights_path}: {name} is {found}; expected shape {shape} for d_in={d_in}, "
                f"d_sae={d_sae}."
            )
    options: dict[str, Any] = {"normalize_activations": False, "unit_norm_decoder": False}
    if architecture == "standard":
        sae = create_sae("relu_l1", d_in, d_sae, **options)
    elif architecture == "topk":
        k = config.get("k", (config.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise InvalidInputError(f"{config_path}: a topk SAE needs 'k'.")
        sae = create_sae("topk", d_in, d_sae, k=int(k), **options)
    elif architecture == "jumprelu":
        sae = create_sae("jumprelu", d_in, d_sae, **options)
    else:
        raise InvalidInputError(
            f"{config_path}: architecture {architecture!r} is not supported; expected standard, "
            "topk or jumprelu."
        )
    if not config.get("apply_b_dec_to_input", True):
        raise InvalidInputError(f"{config_path}: apply_b_dec_to_input=false is not supported.")
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(weights[name].float())
        if architecture == "jumprelu":
            sae.log_threshold.copy_(weights["threshold"].float().clamp_min(1e-12).log())
    return sae.eval()
