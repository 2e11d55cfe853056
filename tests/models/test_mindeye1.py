"""MindEye1 checkpoint conversion: same outputs as MindEye1's BrainNetwork for the same weights.

The reference below is MindEye1's ``BrainNetwork.forward`` (norm_type="ln", act_first=False,
use_projector=True, eval mode) written out with functional ops on the raw state dict, so it shares
no module code with ours. The checkpoint is laid out as their ``Train_MindEye.py`` saves it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import neurodecode
from neurodecode.cli.main import main
from neurodecode.models.mindeye1 import (
    MINDEYE1_SUBJ01,
    convert_mindeye1_state,
    mindeye1_key_shapes,
    split_mindeye1_state,
)
from neurodecode.models.retrieval import RetrievalModule
from neurodecode.validation import InvalidInputError

SMALL = {
    "n_voxels": 40,
    "hidden_dim": 24,
    "n_blocks": 3,
    "n_tokens": 5,
    "clip_dim": 8,
    "projector_dim": 12,
}


def reference_forward(sd: dict[str, torch.Tensor], voxels: torch.Tensor, clip_dim: int):
    """MindEye1 BrainNetwork.forward in eval mode on its own state dict (no prefix)."""

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-5)

    def lin(x, name):
        return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])

    x = F.gelu(ln(lin(voxels, "lin0.0"), "lin0.1"))
    residual = x
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("mlp."))
    for i in range(n_blocks):
        x = F.gelu(ln(lin(x, f"mlp.{i}.0"), f"mlp.{i}.1"))
        x = x + residual
        residual = x
    x = lin(x, "lin1")
    t = x.reshape(len(x), -1, clip_dim)
    t = lin(F.gelu(ln(t, "projector.0")), "projector.2")
    t = lin(F.gelu(ln(t, "projector.3")), "projector.5")
    t = lin(F.gelu(ln(t, "projector.6")), "projector.8")
    return x, t


def random_brain_state(seed: int = 0, **sizes) -> dict[str, torch.Tensor]:
    """BrainNetwork tensors at MindEye1's key names, every one random (LayerNorms too)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in mindeye1_key_shapes(**sizes).items():
        fan_in = shape[-1] if len(shape) == 2 else 1
        scale = 1.0 / math.sqrt(fan_in) if len(shape) == 2 else 0.3
        value = torch.randn(shape, generator=gen) * scale
        if len(shape) == 1 and key.endswith("weight"):
            value = 1.0 + value  # LayerNorm gains around 1
        state[key] = value
    return state


def write_checkpoint(path, brain, with_prior=True, prefix="voxel2clip."):
    model_state = {prefix + k: v for k, v in brain.items()}
    if with_prior:  # a few tensors as dalle2-pytorch's prior names them
        model_state["net.null_brain_embeds"] = torch.randn(5, 8)
        model_state["net.causal_transformer.layers.0.0.to_q.weight"] = torch.randn(8, 8)
        model_state["noise_scheduler.betas"] = torch.rand(100)
    torch.save(
        {
            "epoch": 239,
            "model_state_dict": model_state,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 3e-4, "params": [0]}]},
            "train_losses": [1.0, 0.5],
            "test_losses": [1.1],
            "lrs": [3e-4],
        },
        path,
    )
    return path


def test_full_size_key_table_matches_mindeye1_subj01():
    table = mindeye1_key_shapes()
    assert table["lin0.0.weight"] == (4096, 15724)
    assert table["lin1.weight"] == (257 * 768, 4096)
    assert table["projector.2.weight"] == (2048, 768)
    assert table["projector.8.weight"] == (768, 2048)
    assert sum(1 for k in table if k.startswith("mlp.")) == 4 * 4
    n_params = sum(math.prod(s) for s in table.values())
    assert 947e6 < n_params < 949e6  # "~948M parameters for subj01"
    last = math.prod(table["lin1.weight"]) + math.prod(table["lin1.bias"])
    assert 808e6 < last < 810e6  # "809M of them in the last layer"
    assert mindeye1_key_shapes(**MINDEYE1_SUBJ01) == table


def test_full_size_table_matches_our_architecture_without_allocating():
    sizes = MINDEYE1_SUBJ01
    with torch.device("meta"):
        ours = RetrievalModule(
            geometry={
                "n_voxels": {"subj01": sizes["n_voxels"]},
                "target_shape": [sizes["n_tokens"], sizes["clip_dim"]],
            },
            hidden_dim=sizes["hidden_dim"],
            n_blocks=sizes["n_blocks"],
            projector_dim=sizes["projector_dim"],
        )
    fake = {k: torch.empty(s, device="meta") for k, s in mindeye1_key_shapes().items()}
    mapped, _ = convert_mindeye1_state(fake)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }


@pytest.mark.parametrize("prefix", ["voxel2clip.", "module.voxel2clip.", ""])
def test_convert_cli_gives_mindeye1_outputs(tmp_path, prefix):
    brain = random_brain_state(**SMALL)
    ckpt = write_checkpoint(tmp_path / "last.pth", brain, with_prior=bool(prefix), prefix=prefix)
    out = tmp_path / "decoder"
    args = ["convert", "mindeye1", str(ckpt), "--out", str(out), "--subject", "subj01"]
    assert main([*args, "--drop-prior"]) == 0

    model = neurodecode.load_pretrained(out)
    assert isinstance(model, RetrievalModule)
    assert model.prior is None and model.subjects == ["subj01"]
    voxels = torch.randn(6, SMALL["n_voxels"], generator=torch.Generator().manual_seed(1))
    ref_backbone, ref_retrieval = reference_forward(brain, voxels, SMALL["clip_dim"])
    backbone = model.embed(voxels, "subj01", output="backbone")
    retrieval = model.embed(voxels, "subj01", output="retrieval")
    assert backbone.shape == (6, SMALL["n_tokens"], SMALL["clip_dim"])
    torch.testing.assert_close(backbone.reshape(6, -1), ref_backbone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(retrieval, ref_retrieval, atol=1e-5, rtol=1e-5)
    config = neurodecode.pretrained.read_config(out)
    assert config["metadata"]["prior"] == ("dropped" if prefix else "absent")


def test_incomplete_prior_refused_without_drop_prior(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "last.pth", random_brain_state(**SMALL))
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "mindeye1", str(ckpt), "--out", str(tmp_path / "d")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--drop-prior" in err and "net." in err
    assert not (tmp_path / "d").exists()


def test_missing_key_named_with_shape():
    brain = random_brain_state(**SMALL)
    del brain["mlp.1.1.bias"]
    with pytest.raises(
        InvalidInputError, match=r"missing tensor 'voxel2clip.mlp.1.1.bias'.*\(24,\)"
    ):
        convert_mindeye1_state(brain)


def test_wrong_shape_named_with_expected_shape():
    brain = random_brain_state(**SMALL)
    brain["projector.5.weight"] = torch.zeros(12, 11)
    with pytest.raises(InvalidInputError, match=r"projector.5.weight.*\(12, 11\).*\(12, 12\)"):
        convert_mindeye1_state(brain)


def test_unexpected_keys_refused():
    brain = random_brain_state(**SMALL)
    brain["lin0.1.running_mean"] = torch.zeros(24)  # a BatchNorm variant
    with pytest.raises(
        InvalidInputError, match=r"unexpected tensor 'voxel2clip\.lin0\.1\.running_mean'"
    ):
        convert_mindeye1_state(brain)
    with pytest.raises(InvalidInputError, match=r"unexpected tensor 'ridge\.linears\.0\.weight'"):
        split_mindeye1_state({"ridge.linears.0.weight": torch.zeros(2, 3)})  # a MindEye2 key


def test_unreadable_or_pickled_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as info:
        main(["convert", "mindeye1", str(bad), "--out", str(tmp_path / "d")])
    assert info.value.code == 2 and "weights_only=True" in capsys.readouterr().err

    pickled = tmp_path / "pickled.pth"  # old OneCycleLR states pickled their anneal function
    torch.save({"model_state_dict": {}, "lr_scheduler": {"anneal_func": math.cos}}, pickled)
    with pytest.raises(SystemExit) as info:
        main(["convert", "mindeye1", str(pickled), "--out", str(tmp_path / "d")])
    assert info.value.code == 2 and "weights_only=True" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["convert", "mindeye1", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "d")])
    assert info.value.code == 2 and "checkpoint not found" in capsys.readouterr().err
