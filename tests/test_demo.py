"""`neurodecode demo` end to end on the tiny world: every step runs and writes what it says."""

from __future__ import annotations

import argparse
import json

import numpy as np

import neurodecode
from neurodecode.cli.demo import add_arguments, run

from .conftest import REPO

RUNGS = (
    "encoding_identification",
    "ridge",
    "ours",
    "ours_plus_encoding_identification",
    "chance",
)


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
            "25",  # the tiny world is small: fewer epochs leave the head near chance
            "--captions",
        ]
    )
    assert run(args) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_way"] == 60  # the tiny world has 60 shared images
    ladder = metrics["ladder"]
    # the demo's decoder trains on the rich target space (targets/pooled+rectified8)
    (feature_oracle,) = ladder["feature_oracle"].values()
    assert metrics["target_space"] == "targets/pooled+rectified8"
    for rung in (ladder["oracle"], feature_oracle, *(ladder[k] for k in RUNGS)):
        for key in ("brain_to_image_top1", "image_to_brain_top1"):
            assert 0 <= rung[key] <= 1
    # the ladder's order, in both directions (the physical limit, the target space's limit,
    # the trained decoder, chance)
    for key in ("brain_to_image_top1", "image_to_brain_top1"):
        assert ladder["oracle"][key] >= feature_oracle[key] >= ladder["ours"][key]
        assert ladder["ours"][key] > 2 * ladder["chance"][key]
        assert ladder["encoding_identification"][key] > 2 * ladder["chance"][key]
        assert ladder["ours_plus_encoding_identification"][key] > 2 * ladder["chance"][key]
    assert ladder["chance"]["brain_to_image_top1"] == 1 / 60
    assert metrics["timing"]["total_s"] > 0
    report = (out / "report.md").read_text()
    assert "| ours_plus_encoding_identification |" in report
    assert "| ours |" in report and "| feature_oracle (targets/pooled+rectified8) |" in report
    assert "| shuffled trials |" in report
    assert (out / "ladder.png").stat().st_size > 1000
    recon = metrics["reconstruction"]
    for key in ("pixcorr", "ssim", "clip_2way"):
        assert key in recon and key in recon["controls"]["shuffled"]
        assert key in recon["controls"]["mean_image"]
    # the world carries pixel information: the low-level pathway on the noise-free responses beats
    # the mean training image and the same pathway on the noisy trials
    ceiling = recon["ceiling"]["lowlevel_noise_free"]
    assert ceiling["pixcorr"] > recon["controls"]["mean_image"]["pixcorr"] + 0.1
    assert ceiling["pixcorr"] > recon["lowlevel"]["pixcorr"]
    assert "| low-level from noise-free responses (sim-only ceiling) |" in report
    assert (out / "reconstruction.png").stat().st_size > 1000
    assert recon["condition"] == "manifold"
    from neurodecode.reconstruct.conditioning import load_condition

    condition = load_condition(out / "decoder" / "condition")  # for `reconstruct --model`
    assert condition.n_pool > 0
    # keys in the decoder's rich space, values in sim-clip's (what the generator needs)
    assert condition.unit_pool.shape[1] > condition.unit_values.shape[1]
    assert str(recon["condition_temperature"]) in recon["condition_temperature_validation"]
    # sampling and guidance chosen with the blend on validation images, saved for `reconstruct`
    assert len(recon["sampling_validation"]) == 4  # (mean, nearest) x (1.5, 3)
    assert (condition.sampling, condition.guidance_scale) == (
        recon["sampling"],
        recon["guidance_scale"],
    )
    best = max(recon["sampling_validation"].values(), key=lambda row: row["clip_2way"])
    assert best["blend"] == recon["blend"]
    # the generator's ceiling: the same generation from the true embeddings
    assert "generator_true_embedding" in recon["ceiling"]
    assert "| generator given the true embeddings (ceiling of the semantic part) |" in report
    captions = metrics["captions"]  # brain -> caption: ours, the shuffled control, the ceiling
    for key in ("decoded", "shuffled", "true_embedding"):
        assert 0 <= captions[key]["category_hit_rate"] <= 1
    assert (
        captions["true_embedding"]["category_hit_rate"] > captions["shuffled"]["category_hit_rate"]
    )
    assert (out / "captions.csv").read_text().count("\n") == 61  # header + 60 test images
    assert "| from decoded embeddings (ours) |" in report
    assert (out / "retrieval.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| oracle |" in printed and "| encoding_identification |" in printed
    assert "fit: epoch 25/25, " in printed  # progress a log file shows too
    # the saved decoder loads in one line and decodes the same way
    decoder = neurodecode.load_pretrained(out / "decoder")
    assert set(decoder.hparams.geometry["n_voxels"]) == {"subj01", "subj02"}  # both subjects
    trials = np.random.default_rng(0).normal(
        size=(4, decoder.hparams.geometry["n_voxels"]["subj01"])
    )
    a = decoder.embed(trials.astype(np.float32), "subj01")
    b = neurodecode.load_pretrained(out / "decoder").embed(trials.astype(np.float32), "subj01")
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_feature_oracle_encoder_takes_the_kernel_only_where_it_predicts_better():
    from neurodecode.demo.ladder import feature_oracle_predictions

    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 4)).astype(np.float32)
    x_train, x_test = x[:600], x[600:]

    def responses(z):  # voxel 0 linear, voxel 1 nonlinear in the features
        return np.stack([z @ np.array([1.0, -0.5, 0.3, 0.0]), np.cos(2 * z[:, 0]) * z[:, 1]], 1)

    predicted, kernel_fraction = feature_oracle_predictions(
        x_train, responses(x_train), x_test, n_random_features=512
    )
    truth = responses(x_test)
    r = [np.corrcoef(predicted[:, v], truth[:, v])[0, 1] for v in range(2)]
    assert kernel_fraction == 0.5  # the linear voxel keeps its linear fit
    assert r[0] > 0.99 and r[1] > 0.7  # a linear ridge gets ~0 on the nonlinear one


def test_banded_feature_oracle_reads_a_named_target_by_its_pieces(tmp_path):
    from types import SimpleNamespace

    from neurodecode.demo.decode import target_bands
    from neurodecode.features.store import FeatureStore

    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(5)]
    values = rng.normal(size=(5, 8)).astype(np.float32)
    store = FeatureStore(tmp_path / "store.h5")
    blocks = [["pooled", 2], ["opponent8", 3], ["contrast8", 1], ["energy8", 2]]
    named = {"output": "target_space", "space": "pooled+rectified8", "blocks": blocks}
    store.fill("targets", "pooled+rectified8", ids, lambda b: values[[int(i) for i in b]], named)
    store.fill("sim", "image", ids, lambda b: values[[int(i) for i in b]], {"model": "x"})

    def datamodule(model, layer):
        def targets_of(asked):
            return store.read(model, layer, asked)

        hparams = SimpleNamespace(feature_model=model, feature_layer=layer)
        return SimpleNamespace(hparams=hparams, store_path=store.path, targets_of=targets_of)

    rich = datamodule("targets", "pooled+rectified8")
    bands = target_bands(rich)(np.array([3, 1]))
    assert list(bands) == ["pooled", "rectified8"]  # the name's pieces, in order
    np.testing.assert_array_equal(bands["pooled"], values[[3, 1], :2])
    np.testing.assert_array_equal(bands["rectified8"], values[[3, 1], 2:])
    plain = datamodule("sim", "image")  # not a named target space: one block
    assert target_bands(plain) is plain.targets_of


def test_demo_fits_the_subjects_the_world_has(tmp_path, capsys):
    import pytest

    from neurodecode.cli.demo import subjects_in_world
    from neurodecode.data.nsd import BETAS_SUBDIR, find_nsd_subjects
    from neurodecode.validation import InvalidInputError

    assert find_nsd_subjects(tmp_path) == []
    (tmp_path / "nsddata_betas/ppdata/subj01" / BETAS_SUBDIR).mkdir(parents=True)
    (tmp_path / "nsddata_betas/ppdata/subj03").mkdir(parents=True)  # no betas folder
    assert find_nsd_subjects(tmp_path) == ["subj01"]
    args = {"subjects": ["subj01", "subj02"], "eval_subject": "subj01"}
    subjects_in_world(args, tmp_path)
    assert args["subjects"] == ["subj01"]
    assert "has no subj02: fitting on subj01" in capsys.readouterr().out
    both = {"subjects": ["subj01"]}
    subjects_in_world(both, tmp_path)  # nothing missing: unchanged, silent
    assert both == {"subjects": ["subj01"]} and capsys.readouterr().out == ""
    with pytest.raises(InvalidInputError, match="evaluates subj02"):
        subjects_in_world({"subjects": ["subj02"]}, tmp_path)
