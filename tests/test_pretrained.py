"""save_pretrained / load_pretrained: exact round trips, the on-disk format, and load errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import neurodecode
from neurodecode.models.prior import PriorModule
from neurodecode.models.retrieval import RetrievalModule
from neurodecode.pretrained import load_pretrained, save_pretrained
from neurodecode.validation import InvalidInputError

GEOMETRY = {"n_voxels": {"subj01": 30, "subj02": 25}, "target_shape": [2, 8]}
TINY = {"hidden_dim": 16, "n_blocks": 2, "projector_dim": 16}
PRIOR = {"depth": 1, "num_heads": 2, "head_dim": 8}


@pytest.fixture
def model() -> RetrievalModule:
    torch.manual_seed(0)
    m = RetrievalModule(GEOMETRY, **TINY, shared_latent=True, prior=PRIOR, soft_tau=(0.003, 0.01))
    # move weights and the prior's norm buffer away from their initial values
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    m.prior.train().loss(torch.randn(4, 2, 8), 5 * torch.randn(4, 2, 8))
    return m.eval()


def test_round_trip_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "decoder")
    loaded = neurodecode.load_pretrained(tmp_path / "decoder")
    assert type(loaded) is RetrievalModule and not loaded.training
    brain = torch.randn(5, 25)
    assert torch.equal(loaded.embed(brain, "subj02"), model.embed(brain, "subj02"))
    assert torch.equal(loaded.embed(brain, 1, "backbone"), model.embed(brain, 1, "backbone"))
    a = model.embed(brain, 1, "prior", generator=torch.Generator().manual_seed(3))
    b = loaded.embed(brain, 1, "prior", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert loaded.prior.target_norm.item() == model.prior.target_norm.item() != 1.0
    assert loaded.hparams.soft_tau == [0.003, 0.01]
    assert RetrievalModule.from_pretrained(tmp_path / "decoder").subjects == ["subj01", "subj02"]


def test_files_and_config_format(model, tmp_path):
    out = save_pretrained(model, tmp_path / "d")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["class_path"] == "neurodecode.models.retrieval.RetrievalModule"
    assert config["init_args"]["geometry"] == GEOMETRY
    assert config["init_args"]["prior"] == PRIOR
    assert config["neurodecode_version"] == neurodecode.__version__
    weights = load_file(str(out / "model.safetensors"))  # plain safetensors, no pickle
    assert set(weights) == set(model.state_dict())
    assert "RetrievalModule" in (out / "README.md").read_text()


def test_added_subject_survives_round_trip(model, tmp_path):
    model.add_subject("subj03", 12)
    model.save_pretrained(tmp_path / "d")
    loaded = load_pretrained(tmp_path / "d")
    assert loaded.geometry["n_voxels"] == {"subj01": 30, "subj02": 25, "subj03": 12}
    brain = torch.randn(3, 12)
    assert torch.equal(loaded.embed(brain, 2), model.embed(brain, 2))


def test_prior_module_round_trip(tmp_path):
    module = PriorModule({"target_shape": [8]}, prior=PRIOR).eval()
    module.save_pretrained(tmp_path / "p")
    loaded = PriorModule.from_pretrained(tmp_path / "p")
    cond = torch.randn(3, 8)
    a = module.embed(cond, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    b = loaded.embed(cond, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(InvalidInputError, match="holds a PriorModule; expected a RetrievalModule"):
        RetrievalModule.from_pretrained(tmp_path / "p")


def test_missing_files_are_named(model, tmp_path):
    with pytest.raises(InvalidInputError, match="expected a directory"):
        load_pretrained(tmp_path / "nowhere")
    model.save_pretrained(tmp_path / "d")
    (tmp_path / "d" / "model.safetensors").unlink()
    with pytest.raises(InvalidInputError, match=r"model weights not found.*model\.safetensors"):
        load_pretrained(tmp_path / "d")
    (tmp_path / "d" / "config.json").unlink()
    with pytest.raises(InvalidInputError, match=r"config not found.*config\.json"):
        load_pretrained(tmp_path / "d")


def _edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "init_args":
            config["init_args"].update(value)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "class_path",
    [
        "os.system",
        "neurodecode.models.retrieval.Nope",
        "neurodecode.nomodule.Model",
        "neurodecode.models.retrieval.ResidualMLP",
    ],
)
def test_unknown_class_is_refused(model, tmp_path, class_path):
    model.save_pretrained(tmp_path / "d")
    _edit_config(tmp_path / "d", class_path=class_path)
    with pytest.raises(InvalidInputError, match=r"config\.json: class_path="):
        load_pretrained(tmp_path / "d")


def test_bad_config_and_bad_weights(model, tmp_path):
    d = tmp_path / "d"
    model.save_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"config\.json is not valid JSON"):
        load_pretrained(d)
    model.save_pretrained(d)
    (d / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(InvalidInputError, match=r"model\.safetensors is not a readable"):
        load_pretrained(d)


def test_weight_shape_mismatch_is_named(model, tmp_path):
    d = tmp_path / "d"
    model.save_pretrained(d)
    _edit_config(d, init_args={"hidden_dim": 24})
    with pytest.raises(
        InvalidInputError,
        match=r"model\.safetensors: tensor 'adapters\.subj01\.weight' has shape \(16, 30\)",
    ):
        load_pretrained(d)
    model.save_pretrained(d)
    weights = load_file(str(d / "model.safetensors"))
    weights.pop("projector.net.0.weight")
    save_file(weights, str(d / "model.safetensors"))
    with pytest.raises(InvalidInputError, match=r"missing tensors \['projector\.net\.0\.weight'\]"):
        load_pretrained(d)
