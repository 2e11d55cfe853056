"""`neurodecode demo` end to end on the tiny world: every step runs and writes what it says."""

from __future__ import annotations

import argparse
import json

import numpy as np

import neurodecode
from neurodecode.cli.demo import add_arguments, run

from .conftest import REPO


def test_demo_runs_end_to_end_on_tiny(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--sim-config",
            str(REPO / "datasets/sim/tiny.yaml"),
            "--data",
            str(tmp_path / "sim"),
            "--out",
            str(tmp_path / "run"),
            "--clip-preset",
            "tiny",
            "--max-epochs",
            "2",
        ]
    )
    assert run(args) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("brain_to_image_top1", "image_to_brain_top1", "n_way"):
        assert key in metrics["retrieval"]
    assert metrics["retrieval"]["n_way"] == 60  # the tiny world has 60 shared images
    assert 0 <= metrics["baselines"]["ridge"]["brain_to_image_top1"] <= 1
    assert metrics["oracle"]["brain_to_image_top1"] > 10 / 60  # the ceiling is far above chance
    assert metrics["timing"]["total_s"] > 0
    report = (out / "report.md").read_text()
    assert "| retrieval head (ours) |" in report and "| shuffled trials |" in report
    recon = metrics["reconstruction"]
    for key in ("pixcorr", "ssim", "clip_2way"):
        assert key in recon and key in recon["controls"]["shuffled"]
        assert key in recon["controls"]["mean_image"]
    assert (out / "reconstruction.png").stat().st_size > 1000
    assert (out / "retrieval.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "oracle (true model)" in printed
    # the saved decoder loads in one line and decodes the same way
    decoder = neurodecode.load_pretrained(out / "decoder")
    trials = np.random.default_rng(0).normal(
        size=(4, decoder.hparams.geometry["n_voxels"]["subj01"])
    )
    a = decoder.embed(trials.astype(np.float32), "subj01")
    b = neurodecode.load_pretrained(out / "decoder").embed(trials.astype(np.float32), "subj01")
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
