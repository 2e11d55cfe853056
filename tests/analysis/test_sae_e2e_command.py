"""``neurodecode analyze sae`` with an ``e2e`` section: an end-to-end SAE trained in a CLIP image
tower from the command line, saved to the one model folder, scored against a local-MSE SAE; and
the section's config errors (one line, exit status 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import neurodecode
from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.cli.analyze_sae import validate_sae_config
from neurodecode.cli.config import load_config
from neurodecode.cli.main import main
from neurodecode.pretrained import read_config
from neurodecode.validation import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


def _e2e_config(run_dir, stimuli, **e2e):
    # sim-clip-tiny with seeded random weights (training the tiny preset takes ~20 s; the method's
    # planted truth is tests/analysis/test_sae_e2e.py); the tiny world's 300 images, 90 held out
    return {
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {
            "source": "clip",
            "stimuli": str(stimuli),
            "sim_clip_preset": None,
            "model_name": "sim-clip-tiny",
            "layer": "visual.trunk.head",
            "n_images": None,
            "image_batch_size": 100,
        },
        "sae": {"architecture": "topk", "n_latents": 64, "k": 4},
        "training": {"steps": 40, "batch_size": 64, "lr": 3e-3, "accelerator": "cpu"},
        "evaluation": {"eval_fraction": 0.3, "dashboard_latents": 3, "dashboard_top": 3},
        "e2e": e2e,
    }


def test_analyze_sae_trains_an_e2e_ds_sae_that_moves_the_logits_less_than_a_local_one(
    tmp_path, tiny_nsd, capsys
):
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(_e2e_config(tmp_path / "run", tiny_nsd, objective="e2e+ds")))
    assert main(["analyze", "sae", "--config", str(path)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["objective"] == "e2e+ds"
    assert metrics["source"]["n_eval_images"] == 90 and metrics["source"]["n_train_images"] == 210
    for row in (metrics, metrics["local"]):
        assert math.isfinite(row["kl"]) and row["kl"] > 0 and row["l0"] == pytest.approx(4)
        assert 0 <= row["fvu"] and 0 <= row["accuracy_patched"] <= 1
    # the KL objective: closer logits than the MSE-trained SAE of the same size, init and L0,
    # both far from the layer's mean ablation
    assert metrics["kl"] < 0.9 * metrics["local"]["kl"] < 0.9 * metrics["kl_mean_ablation"]
    out = capsys.readouterr().out
    assert "e2e+ds  KL=" in out and "local   KL=" in out and f"wrote {run}" in out

    # the one SAE model folder: loads as its architecture, the objective in the metadata
    sae = neurodecode.load_pretrained(run / "sae").eval()
    assert isinstance(sae, SparseAutoencoder) and (sae.d_in, sae.n_latents) == (64, 64)
    training = read_config(run / "sae")["metadata"]["training"]
    assert training == {
        "objective": "e2e+ds",
        "layer": "visual.trunk.head",
        "later_layers": ["visual"],
        "kl_coefficient": 1.0,
        "ds_coefficient": 1.0,
        "lr": 3e-3,
        "steps": 40,
    }
    local = SparseAutoencoder.from_pretrained(run / "sae_local").eval()
    x = torch.randn(8, 64)
    with torch.no_grad():
        assert not torch.allclose(sae(x).output, local(x).output)
    assert (run / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"e2e": {"objective": "e2e+mse"}}, r"e2e.objective='e2e\+mse'"),
        ({"e2e": {"objectve": "e2e"}}, r"section 'e2e' has unknown keys \['objectve'\]"),
        ({"e2e": {"ds_coefficient": 2.0}}, "belong to objective e2e\\+ds; the objective is e2e"),
        ({"e2e": {"objective": "e2e+ds", "later_layers": []}}, "e2e.later_layers is \\[\\]"),
        ({"e2e": {"kl_coefficient": -1}}, r"e2e.kl_coefficient is -1; expected a number >= 0"),
        ({"e2e": {"logit_scale": 0}}, r"e2e.logit_scale is 0"),
        ({"sae": {"architecture": "gated", "n_latents": 8}}, "end-to-end training takes"),
        ({"sae": {"architecture": "topk", "n_latents": 8, "transcoder": True}}, "sae.transcoder"),
        ({"data": {"source": "planted"}}, "an e2e section needs data.source: clip"),
        ({"data": {"source": "clip", "capture": "io"}}, "set data.capture: output"),
    ],
)
def test_bad_e2e_config_gives_a_clear_error(tmp_path, change, message):
    config = _e2e_config(tmp_path / "run", tmp_path)
    config.update(change)
    with pytest.raises(InvalidInputError, match=message):
        validate_sae_config(config, "e2e.yaml")


def test_cli_reports_a_bad_e2e_layer_in_one_line(tmp_path, tiny_nsd, capsys):
    config = _e2e_config(tmp_path / "run", tiny_nsd, objective="e2e+ds", later_layers=["visul"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "sae", "--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("neurodecode analyze: error: e2e.later_layers ['visul'] not found")
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_sae_e2e_experiment_config_is_valid():
    path = ROOT / "experiments" / "sae_e2e.yaml"
    config = validate_sae_config(load_config(path), str(path))
    assert config["e2e"]["objective"] == "e2e+ds" and config["data"]["source"] == "clip"
    assert config["e2e"]["later_layers"] == ["visual"] and config["training"]["steps"] >= 1000


def test_clip_source_reads_a_world_for_the_local_sae_too(tmp_path, tiny_nsd):
    # data.stimuli is shared by both trainings: without an e2e section the usual SAE is trained
    # on the world's images and its zero-shot check uses the world's categories
    config = _e2e_config(tmp_path / "run", tiny_nsd)
    del config["e2e"]
    config["training"]["steps"] = 10
    config["data"]["n_downstream_images"] = 50
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "sae", "--config", str(path)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "objective" not in metrics and "kl" not in metrics
    downstream = metrics["downstream"]
    assert downstream["task"] == "zero_shot_category_accuracy" and downstream["n_images"] == 50
    assert 0 <= downstream["original"] <= 1
