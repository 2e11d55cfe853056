"""`neurodecode reconstruct` on a saved tiny decoder: files written, bad inputs rejected."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from neurodecode.cli.main import main
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.models.retrieval import RetrievalModule

    dim = get_sim_clip("tiny", progress=False).embed_dim
    model = RetrievalModule(
        geometry={"n_voxels": {"subj01": 12}, "target_shape": [dim]},
        hidden_dim=16,
        n_blocks=1,
        projector_dim=16,
        prior={"depth": 1, "num_heads": 2, "head_dim": 8},
        prior_inference_steps=2,
    )
    path = tmp_path_factory.mktemp("decoder") / "decoder"
    model.save_pretrained(path)
    return path


def _run(decoder, input_path, out, *extra):
    return main(
        [
            "reconstruct",
            "--model",
            str(decoder),
            "--input",
            str(input_path),
            "--out",
            str(out),
            "--clip-preset",
            "tiny",
            "--num-samples",
            "2",
            *extra,
        ]
    )


def test_writes_pngs_and_index_from_a_voxel_matrix(tiny_decoder, tmp_path):
    brain = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    np.save(tmp_path / "brain.npy", brain)
    assert _run(tiny_decoder, tmp_path / "brain.npy", tmp_path / "out") == 0
    rows = list(csv.DictReader(open(tmp_path / "out/index.csv")))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    for r in rows:
        assert (tmp_path / "out" / r["file"]).stat().st_size > 100


def test_nifti_series_with_mask_and_trial_selection(tiny_decoder, tmp_path):
    mask = np.zeros((4, 3, 2), dtype=np.int16)
    mask.flat[:12] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    series = np.random.default_rng(1).normal(size=(4, 3, 2, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(series, np.eye(4)), tmp_path / "bold.nii.gz")
    assert (
        _run(
            tiny_decoder,
            tmp_path / "bold.nii.gz",
            tmp_path / "out",
            "--mask",
            str(tmp_path / "mask.nii.gz"),
            "--trials",
            "1,3",
        )
        == 0
    )
    rows = list(csv.DictReader(open(tmp_path / "out/index.csv")))
    assert [r["trial"] for r in rows] == ["1", "3"]


def test_wrong_voxel_count_is_one_clear_error(tiny_decoder, tmp_path):
    np.save(tmp_path / "brain.npy", np.zeros((2, 30), dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"30 voxels.*expects 12 for subj01"):
        _run(tiny_decoder, tmp_path / "brain.npy", tmp_path / "out", "--debug")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidInputError, match="--mask is required"):
        nib.save(
            nib.Nifti1Image(np.zeros((2, 2, 2, 2), np.float32), np.eye(4)), tmp_path / "v.nii.gz"
        )
        _run(tiny_decoder, tmp_path / "v.nii.gz", tmp_path / "out2", "--debug")


def test_nsd_betas_file_with_mask(tiny_decoder, tiny_nsd, tmp_path):
    roi = nib.load(tiny_nsd / "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz")
    general = np.argwhere(np.asarray(roi.dataobj) == 1)[:12]
    mask = np.zeros(roi.shape, dtype=np.int16)
    mask[tuple(general.T)] = 1
    nib.save(nib.Nifti1Image(mask, roi.affine), tmp_path / "mask12.nii.gz")
    betas = (
        tiny_nsd
        / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
        / "betas_session01.hdf5"
    )
    assert (
        _run(
            tiny_decoder,
            betas,
            tmp_path / "out",
            "--mask",
            str(tmp_path / "mask12.nii.gz"),
            "--trials",
            "0,1,2",
        )
        == 0
    )
    assert len(list((tmp_path / "out").glob("recon_*.png"))) == 3


def test_few_nsd_trials_are_zscored_with_their_whole_session(tiny_nsd, tmp_path):
    from neurodecode.data.brain_input import read_brain_input
    from neurodecode.data.nsd import read_nsd_betas

    roi = nib.load(tiny_nsd / "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz")
    nib.save(
        nib.Nifti1Image((np.asarray(roi.dataobj) == 1).astype(np.int16), roi.affine),
        tmp_path / "general.nii.gz",
    )
    betas = (
        tiny_nsd
        / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
        / "betas_session01.hdf5"
    )
    brain = read_brain_input(betas, tmp_path / "general.nii.gz", [0, 1, 2], zscore=True)
    session = read_nsd_betas(tiny_nsd, "subj01", sessions=[1], progress=False)
    assert brain.shape == (3, session.data.shape[1])
    # the training reader's session-z-scored rows, not three trials z-scored against themselves
    np.testing.assert_allclose(brain, session.data[:3], rtol=1e-4, atol=1e-4)
    assert np.abs(brain.mean(0)).max() > 0.05  # three rows z-scored alone would have mean 0


def test_a_file_too_short_to_zscore_is_refused(tiny_decoder, tmp_path):
    mask = np.zeros((4, 3, 2), dtype=np.int16)
    mask.flat[:12] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    volume = np.random.default_rng(1).normal(size=(4, 3, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "one.nii.gz")
    args = ("--mask", str(tmp_path / "mask.nii.gz"))
    with pytest.raises(InvalidInputError, match=r"1 trial\(s\): too few to z-score"):
        _run(tiny_decoder, tmp_path / "one.nii.gz", tmp_path / "out", *args, "--debug")
    assert (
        _run(tiny_decoder, tmp_path / "one.nii.gz", tmp_path / "out", *args, "--zscore", "no") == 0
    )


def _decoder_with_lowlevel(tiny_decoder, tmp_path, n_voxels=12, blend=1.0, mode="rgb"):
    """A copy of the tiny decoder with a planted low-level pathway: every trial -> pure red."""
    import shutil

    import torch

    from neurodecode.reconstruct.lowlevel import (
        LOWLEVEL_FOLDER,
        LowLevelPathway,
        RidgeLowLevel,
        save_lowlevel,
    )

    decoder = tmp_path / "decoder"
    shutil.copytree(tiny_decoder, decoder)
    module = RidgeLowLevel(n_voxels, image_size=4)
    module.intercept.copy_(torch.tensor([1.0, 0.0, 0.0]).repeat_interleave(16))
    save_lowlevel(LowLevelPathway(module, "subj01", 0.5, blend, mode), decoder / LOWLEVEL_FOLDER)
    return decoder


def test_saved_lowlevel_pathway_is_used(tiny_decoder, tmp_path, capsys):
    from PIL import Image

    decoder = _decoder_with_lowlevel(tiny_decoder, tmp_path)
    np.save(tmp_path / "brain.npy", np.random.default_rng(2).normal(size=(2, 12)).astype("f4"))
    assert _run(decoder, tmp_path / "brain.npy", tmp_path / "out") == 0
    assert "low-level pathway: " + str(decoder / "lowlevel") in capsys.readouterr().out
    for png in sorted((tmp_path / "out").glob("recon_*.png")):
        image = np.asarray(Image.open(png))
        # blend weight 1 in RGB: the final image is the pathway's (red) image
        assert (image[..., 0] == 255).all() and (image[..., 1:] == 0).all()
    assert _run(decoder, tmp_path / "brain.npy", tmp_path / "plain", "--no-lowlevel") == 0
    assert "low-level pathway: none" in capsys.readouterr().out
    plain = np.asarray(Image.open(tmp_path / "plain/recon_0000.png"))
    assert not ((plain[..., 0] == 255).all() and (plain[..., 1:] == 0).all())


def test_lowlevel_with_wrong_voxel_count_is_one_clear_error(tiny_decoder, tmp_path):
    decoder = _decoder_with_lowlevel(tiny_decoder, tmp_path, n_voxels=7)
    np.save(tmp_path / "brain.npy", np.zeros((2, 12), dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"lowlevel reads 7 voxels.*expects 12"):
        _run(decoder, tmp_path / "brain.npy", tmp_path / "out", "--debug")
    assert not (tmp_path / "out").exists()


def _decoder_with_condition(tiny_decoder, tmp_path, **projection_options):
    """A copy of the tiny decoder with a condition/ folder (a 5-image pool) and a brain.npy."""
    import shutil

    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.reconstruct.conditioning import (
        CONDITION_FOLDER,
        ImageManifoldProjection,
        save_condition,
    )

    decoder = tmp_path / "decoder"
    shutil.copytree(tiny_decoder, decoder)
    dim = get_sim_clip("tiny", progress=False).embed_dim
    pool = np.random.default_rng(3).normal(size=(5, dim))
    projection = ImageManifoldProjection.from_pool(pool, **projection_options)
    save_condition(projection, decoder / CONDITION_FOLDER)
    np.save(tmp_path / "brain.npy", np.random.default_rng(4).normal(size=(2, 12)).astype("f4"))
    return decoder


def test_saved_condition_is_used_and_prior_can_be_asked_for(tiny_decoder, tmp_path, capsys):
    decoder = _decoder_with_condition(tiny_decoder, tmp_path)
    assert _run(decoder, tmp_path / "brain.npy", tmp_path / "out") == 0
    assert "projected onto 5 training images' embeddings" in capsys.readouterr().out
    assert _run(decoder, tmp_path / "brain.npy", tmp_path / "p", "--condition", "prior") == 0
    assert "samples of the decoder's diffusion prior" in capsys.readouterr().out
    with pytest.raises(InvalidInputError, match="--condition manifold needs"):
        _run(
            tiny_decoder,
            tmp_path / "brain.npy",
            tmp_path / "m",
            "--condition",
            "manifold",
            "--debug",
        )


def test_saved_nearest_sampling_and_guidance_are_used(tiny_decoder, tmp_path, capsys):
    decoder = _decoder_with_condition(
        tiny_decoder, tmp_path, sampling="nearest", guidance_scale=2.0
    )
    assert _run(decoder, tmp_path / "brain.npy", tmp_path / "out", "--num-samples", "3") == 0
    printed = capsys.readouterr().out
    assert "each sample conditioned on one of the nearest training images' embeddings" in printed
    assert "guidance 2" in printed
    assert len(list((tmp_path / "out").glob("recon_*.png"))) == 2
    with pytest.raises(InvalidInputError, match="--num-samples 6 is more than the 5 training"):
        _run(decoder, tmp_path / "brain.npy", tmp_path / "o", "--num-samples", "6", "--debug")
