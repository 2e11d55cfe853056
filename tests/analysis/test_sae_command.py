"""``neurodecode analyze sae --config FILE`` end to end, and config errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.cli.analyze_sae import validate_sae_config
from neurodecode.cli.main import main
from neurodecode.validation import InvalidInputError


def _tiny_config(run_dir, **overrides):
    config = {
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {"source": "planted", "n_samples": 3000, "d": 8, "n_atoms": 16, "n_active": 2},
        "sae": {"architecture": "topk", "n_latents": 32, "k": 2, "dead_window": 2000},
        "training": {"steps": 60, "batch_size": 128, "lr": 3e-3, "accelerator": "cpu"},
        "evaluation": {"dashboard_latents": 3, "dashboard_top": 4},
    }
    config.update(overrides)
    return config


def test_analyze_sae_runs_end_to_end(tmp_path):
    config_path = tmp_path / "sae.yaml"
    config_path.write_text(yaml.safe_dump(_tiny_config(tmp_path / "run", export_saelens=True)))
    assert main(["analyze", "sae", "--config", str(config_path)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "fvu",
        "l0",
        "dead_fraction",
        "dense_fraction",
        "density_histogram",
        "gamma_rescale_reconstruction",
        "gamma_rescale_input",
        "recovery",
    ):
        assert key in metrics, key
    assert 0 <= metrics["fvu"] < 1 and metrics["l0"] <= 2
    assert (run / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "config.yaml").is_file()
    sae = SparseAutoencoder.from_pretrained(run / "sae")
    assert sae.architecture == "topk" and sae.n_latents == 32
    # the SAELens copy encodes as the saved SAE does
    from neurodecode.analysis.sae.saelens import read_saelens

    x = torch.randn(16, 8)
    with torch.no_grad():
        torch.testing.assert_close(read_saelens(run / "saelens").encode(x), sae.eval().encode(x))


def test_the_encoder_init_scale_is_a_config_option(tmp_path):
    # the default (TopK: RMS 1/64 entries) and a YAML value reach the SAE and its saved config
    config = _tiny_config(tmp_path / "run")
    config["sae"]["encoder_init_scale"] = 0.5
    config["training"]["steps"] = 5
    path = tmp_path / "sae.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "sae", "--config", str(path)]) == 0
    saved = json.loads((tmp_path / "run" / "sae" / "config.json").read_text())
    assert json.dumps(saved).count('"encoder_init_scale": 0.5') == 1
    assert (
        validate_sae_config(_tiny_config(tmp_path / "r"))["sae"].get("encoder_init_scale") is None
    )


def test_analyze_sae_transcoder_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(300, 2, 6)).astype(np.float32)  # (stimuli, tokens, d)
    np.save(tmp_path / "x.npy", inputs)
    np.save(tmp_path / "y.npy", np.tanh(inputs[..., :4]))
    config = _tiny_config(
        tmp_path / "run",
        data={
            "source": "array",
            "inputs": str(tmp_path / "x.npy"),
            "targets": str(tmp_path / "y.npy"),
        },
        sae={
            "architecture": "jumprelu",
            "n_latents": 12,
            "transcoder": True,
            "skip_connection": True,
            "bandwidth": 0.05,
        },
    )
    config["training"]["steps"] = 20
    config_path = tmp_path / "tc.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "sae", "--config", str(config_path)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["transcoder"] is True and "recovery" not in metrics
    assert (tmp_path / "run" / "dashboard.png").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trainig": {}}, r"unknown keys \['trainig'\]"),
        (
            {"sae": {"architecture": "topk", "n_latents": 8, "l1_coefficient": 1.0}},
            r"section 'sae' \(topk\) has unknown keys \['l1_coefficient'\]",
        ),
        ({"sae": {"architecture": "sparse", "n_latents": 8}}, "sae.architecture='sparse'"),
        (
            {"sae": {"architecture": "gated", "n_latents": 8}, "export_saelens": True},
            "SAELens's format takes relu_l1, topk, jumprelu and batchtopk SAEs, not gated",
        ),
        ({"data": {"source": "planted", "dims": 8}}, r"source 'planted'.*unknown keys \['dims'\]"),
        ({"data": {"source": "hdf5"}}, "data.source='hdf5'"),
        ({"training": {"step": 5}}, r"section 'training' has unknown keys \['step'\]"),
    ],
)
def test_bad_config_keys_give_a_clear_error(tmp_path, change, message):
    config = _tiny_config(tmp_path / "run")
    config.update(change)
    with pytest.raises(InvalidInputError, match=message):
        validate_sae_config(config, "sae.yaml")


def test_cli_reports_bad_config_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_tiny_config(tmp_path / "run", evaluaton={})))
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "sae", "--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("neurodecode analyze: error: ") and err.count("\n") == 1
    assert re.search(r"bad\.yaml has unknown keys \['evaluaton'\]", err)
    assert "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["analyze", "sae", "--config", str(tmp_path / "missing.yaml")])
    assert "analysis config not found" in capsys.readouterr().err
    # --debug: the error itself, with its traceback
    with pytest.raises(InvalidInputError, match="analysis config not found"):
        main(["analyze", "sae", "--config", str(tmp_path / "missing.yaml"), "--debug"])


def test_analyze_sae_transcoder_from_a_feature_store(tmp_path):
    from neurodecode.features.store import FeatureStore

    rng = np.random.default_rng(1)
    ids = [f"img{i}" for i in range(200)]
    first = {sid: rng.normal(size=6).astype(np.float32) for sid in ids}
    store = FeatureStore(tmp_path / "features.h5")
    store.fill(
        "toy",
        "mlp_in",
        ids,
        lambda b: np.stack([first[s] for s in b]),
        {"m": "toy"},
        progress=False,
    )
    store.fill(
        "toy",
        "mlp_out",
        ids,
        lambda b: np.stack([np.tanh(first[s][:4]) for s in b]),
        {"m": "toy"},
        progress=False,
    )
    config = _tiny_config(
        tmp_path / "run",
        data={
            "source": "feature_store",
            "path": str(tmp_path / "features.h5"),
            "model_name": "toy",
            "layer": "mlp_in",
            "target_layer": "mlp_out",
        },
        sae={"architecture": "batchtopk", "n_latents": 12, "k": 2, "transcoder": True},
    )
    config["training"]["steps"] = 10
    path = tmp_path / "fs.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "sae", "--config", str(path)]) == 0
    sae = SparseAutoencoder.from_pretrained(tmp_path / "run" / "sae")
    assert (sae.d_in, sae.d_out, sae.transcoder) == (6, 4, True)


@pytest.mark.parametrize("name", ["sae_planted.yaml", "sae_clip.yaml", "sae_vision_tokens.yaml"])
def test_experiment_configs_are_valid(name):
    from pathlib import Path

    from neurodecode.cli.config import load_config

    path = Path(__file__).resolve().parents[2] / "experiments" / name
    config = validate_sae_config(load_config(path), str(path))
    assert config["sae"]["architecture"] in ("topk", "batchtopk")
