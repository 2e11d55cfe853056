"""SAELens folder export: the file schema, SAELens's own formulas on the written tensors, and the
round trip back into ours."""

from __future__ import annotations

import json

import pytest
import torch

import neurodecode.analysis.sae  # noqa: F401  (registers the architectures)
from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.saelens import export_saelens, read_saelens
from neurodecode.validation import InvalidInputError


def _planted(architecture: str, **options):
    torch.manual_seed(0)
    sae = create_sae(architecture, 6, 10, **options)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn_like(p) * 0.5)
        sae.input_scale.fill_(2.5)
        sae.output_scale.fill_(2.5)
        if architecture == "jumprelu":
            sae.log_threshold.copy_(torch.randn(10) * 0.3 - 1.0)
        if architecture == "batchtopk":
            sae.threshold.fill_(0.4)
    return sae.eval()


def _saelens_forward(config: dict, w: dict, x: torch.Tensor):
    """SAELens's encode/decode written from its documented formulas."""
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if config["architecture"] == "topk":
        values, idx = pre.topk(config["k"], dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))
    elif config["architecture"] == "jumprelu":
        z = torch.relu(pre) * (pre > w["threshold"])
    else:
        z = torch.relu(pre)
    return z, z @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize(
    "architecture,options",
    [("relu_l1", {}), ("topk", {"k": 3}), ("jumprelu", {}), ("batchtopk", {"k": 3})],
)
def test_export_follows_the_schema_and_saelens_formulas(tmp_path, architecture, options):
    from safetensors.torch import load_file

    sae = _planted(architecture, **options)
    folder = export_saelens(sae, tmp_path / "sae", hook_name="visual.trunk.4", model_name="sim")
    config = json.loads((folder / "cfg.json").read_text())
    weights = load_file(str(folder / "sae_weights.safetensors"))
    assert config["d_in"] == 6 and config["d_sae"] == 10
    assert config["apply_b_dec_to_input"] is True and config["normalize_activations"] == "none"
    assert config["hook_name"] == "visual.trunk.4"
    assert {k: tuple(v.shape) for k, v in weights.items() if k != "threshold"} == {
        "W_enc": (6, 10),
        "b_enc": (10,),
        "W_dec": (10, 6),
        "b_dec": (6,),
    }
    x = torch.randn(32, 6)
    with torch.no_grad():
        ours = sae(x)
        z, x_hat = _saelens_forward(config, weights, x)
    assert (ours.latents > 0).sum() > 0
    torch.testing.assert_close(z, ours.latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_hat, ours.output, rtol=1e-5, atol=1e-5)
    back = read_saelens(folder)
    with torch.no_grad():
        again = back(x)
    torch.testing.assert_close(again.latents, ours.latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again.output, ours.output, rtol=1e-5, atol=1e-5)


def test_unsupported_and_broken_folders_are_one_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="supports"):
        export_saelens(create_sae("gated", 6, 10), tmp_path / "g")
    sae = _planted("relu_l1")
    folder = export_saelens(sae, tmp_path / "sae")
    config = json.loads((folder / "cfg.json").read_text())
    config["d_sae"] = 11
    (folder / "cfg.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match=r"W_enc is \(6, 10\); expected shape \(6, 11\)"):
        read_saelens(folder)
    (folder / "sae_weights.safetensors").unlink()
    with pytest.raises(InvalidInputError, match=r"sae_weights\.safetensors is missing"):
        read_saelens(folder)
