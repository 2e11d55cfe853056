"""The bad-input matrix: broken files and arguments across loaders, the CLI and load_pretrained.

Every case breaks one thing in a copy of a good input and asserts that the call fails with ONE
clear error (:class:`InvalidInputError`, or ``SystemExit`` from the CLI with the message on
stderr) whose message names the file or argument (``names``) and says what was expected
(``expected``); and that nothing was left behind in the output folder. A control test reads the
unbroken copies, so each case fails because of its defect and not because the fixture is broken.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from neurodecode.validation import InvalidInputError

from .conftest import REPO, write_projected_features

BETAS = "nsddata_betas/ppdata/{s}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
ROI = "nsddata/ppdata/{s}/func1pt8mm/roi"
CTAB = "nsddata/freesurfer/{s}/label"
DESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
CAPTIONS = "nsddata_stimuli/stimuli/nsd/nsd_captions.csv"
FIF = "derivatives/preprocessed/preprocessed_P{n}-epo.fif"


# ----------------------------------------------------------------------------- fixtures


def _linked_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` made of hard links (instant); :func:`_own` a file before changing it."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _own(path: Path) -> Path:
    """Replace a hard link by a private copy, so that writing to it leaves the original alone."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: int(len(data) * fraction)])


def build_feature_store(root: Path, path: Path) -> Path:
    """An 8-d random projection of the world's generating features."""
    return write_projected_features(root, path, width=8)


@pytest.fixture(scope="module")
def feature_store(tiny_nsd, tmp_path_factory) -> Path:
    """Features of every tiny-world stimulus."""
    return build_feature_store(tiny_nsd, tmp_path_factory.mktemp("bad-features") / "features.h5")


@pytest.fixture(scope="module")
def tiny_fif(tmp_path_factory) -> Path:
    """A THINGS-MEG-layout root with one small epochs file (5 CTF channels, 8 epochs)."""
    import mne
    import pandas as pd

    names = [n for n in mne.channels.read_layout("CTF-275").names][:5]
    info = mne.create_info(names, sfreq=100.0, ch_types="mag")
    data = np.random.default_rng(0).normal(scale=1e-13, size=(8, 5, 30))
    metadata = pd.DataFrame(
        {
            "stimulus_id": [f"img{i % 4}" for i in range(8)],
            "trial_type": ["exp"] * 6 + ["test"] * 2,
        }
    )
    epochs = mne.EpochsArray(data, info, tmin=-0.1, metadata=metadata, verbose="error")
    root = tmp_path_factory.mktemp("meg") / "things"
    (root / "derivatives/preprocessed").mkdir(parents=True)
    epochs.save(root / FIF.format(n=1), verbose="error")
    return root


@pytest.fixture(scope="module")
def saved_decoder(tiny_nsd, tmp_path_factory) -> Path:
    """An (untrained) retrieval decoder saved for subj01 of the tiny world."""
    from neurodecode.data.nsd import count_roi_voxels
    from neurodecode.models.retrieval import RetrievalModule

    geometry = {"n_voxels": {"subj01": count_roi_voxels(tiny_nsd, "subj01")}, "target_shape": [8]}
    model = RetrievalModule(geometry, hidden_dim=16, n_blocks=1, projector_dim=16)
    return model.save_pretrained(tmp_path_factory.mktemp("decoder") / "retrieval")


@pytest.fixture(scope="module")
def saved_prior(tmp_path_factory) -> Path:
    """A saved model of another class (the diffusion prior), to load in place of a decoder."""
    from neurodecode.models.prior import PriorModule

    model = PriorModule(geometry={"n_voxels": {"subj01": 10}, "target_shape": [8]})
    return model.save_pretrained(tmp_path_factory.mktemp("decoder") / "prior")


def _read_betas(root: Path, subject: str = "subj01", **kwargs):
    from neurodecode.data.nsd import read_nsd_betas

    kwargs.setdefault("sessions", [1])
    return read_nsd_betas(root, subject, progress=False, **kwargs)


def _cli(*argv: str) -> None:
    from neurodecode.cli.main import main

    main(list(argv))


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One bad input: ``call`` must fail naming ``names`` and saying ``expected``."""

    call: Callable[[], object]
    names: str
    expected: str
    output: Path | None = None  # a folder or file that must not exist (or be empty) afterwards


class Env:
    """What every case may use: a linked copy of the tiny world, the other fixtures, tmp_path."""

    def __init__(self, request, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self._request = request

    def fixture(self, name: str):
        return self._request.getfixturevalue(name)

    @property
    def nsd(self) -> Path:
        if not hasattr(self, "_nsd"):
            self._nsd = _linked_copy(self.fixture("tiny_nsd"), self.tmp / "nsd")
        return self._nsd

    def betas(self, session: int = 1, subject: str = "subj01") -> Path:
        return self.nsd / BETAS.format(s=subject) / f"betas_session{session:02d}.hdf5"

    @property
    def meg(self) -> Path:
        if not hasattr(self, "_meg"):
            self._meg = _linked_copy(self.fixture("tiny_fif"), self.tmp / "meg")
        return self._meg

    def decoder(self, which: str = "saved_decoder") -> Path:
        copy = self.tmp / which
        shutil.copytree(self.fixture(which), copy)
        return copy


CASES: dict[str, Callable[[Env], Case]] = {}


def case(function: Callable[[Env], Case]) -> Callable[[Env], Case]:
    CASES[function.__name__] = function
    return function


# --- NSD betas (HDF5 and NIfTI)


@case
def hdf5_betas_truncated(env: Env) -> Case:
    _truncate(env.betas())
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"cannot read betas file")


@case
def hdf5_betas_not_hdf5(env: Env) -> Case:
    path = env.betas()
    path.unlink()
    path.write_bytes(b"\x00garbage" * 100)
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"cannot read betas file")


@case
def hdf5_betas_without_dataset(env: Env) -> Case:
    path = env.betas()
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.zeros((2, 2, 2, 2), np.int16))
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"no dataset 'betas'")


def _rewrite_betas(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    with h5py.File(path, "r") as f:
        data = f["betas"][:]
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=change(data))


@case
def hdf5_betas_wrong_axis_order(env: Env) -> Case:  # (trials, X, Y, Z) instead of (trials, Z, Y, X)
    _rewrite_betas(env.betas(), lambda d: np.ascontiguousarray(d.transpose(0, 3, 2, 1)))
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"\(trials, Z, Y, X\)")


@case
def hdf5_betas_trials_last(env: Env) -> Case:  # MATLAB order (X, Y, Z, trials) written as is
    _rewrite_betas(env.betas(), lambda d: np.ascontiguousarray(d.transpose(3, 2, 1, 0)))
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"\(trials, Z, Y, X\)")


@case
def hdf5_betas_missing_trial_axis(env: Env) -> Case:
    _rewrite_betas(env.betas(), lambda d: d[0])
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"expected \(trials,")


def _float_betas_with(value: float) -> Callable[[Env], Case]:
    def make(env: Env) -> Case:
        from neurodecode.data.nsd import read_nsd_betas

        good = read_nsd_betas(env.nsd, "subj01", sessions=[1], progress=False)
        x, y, z = good.info["voxel_ijk"][7]

        def change(d: np.ndarray) -> np.ndarray:
            d = d.astype(np.float32) / 300
            d[3, z, y, x] = value
            return d

        _rewrite_betas(env.betas(), change)
        return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"NaN/inf.*finite")

    return make


CASES["hdf5_betas_nan_voxel"] = _float_betas_with(np.nan)
CASES["hdf5_betas_inf_voxel"] = _float_betas_with(np.inf)


def _nifti_betas(env: Env, transpose: tuple[int, ...] = (3, 2, 1, 0)) -> Path:
    h5 = env.betas()
    with h5py.File(h5, "r") as f:
        data = f["betas"][:]
    h5.unlink()
    path = h5.with_name("betas_session01.nii.gz")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data.transpose(transpose)), np.eye(4)), path)
    return path


@case
def nifti_betas_truncated(env: Env) -> Case:
    _truncate(_nifti_betas(env), 0.6)
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.nii\.gz", r"cannot read betas")


@case
def nifti_betas_wrong_axis_order(env: Env) -> Case:  # (trials, X, Y, Z): trials first
    _nifti_betas(env, transpose=(0, 3, 2, 1))
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.nii\.gz", r"\(X, Y, Z, trials\)")


# --- sessions and design


@case
def missing_session(env: Env) -> Case:
    env.betas(2).unlink()
    return Case(
        lambda: _read_betas(env.nsd, sessions=[1, 2]),
        r"sessions \[2\] of subj01",
        r"betas_sessionNN",
    )


@case
def no_session_files(env: Env) -> Case:
    folder = env.betas().parent
    for path in folder.iterdir():
        path.unlink()
    return Case(lambda: _read_betas(env.nsd, sessions=None), re.escape(str(folder)), r"betas_")


@case
def subject_without_betas_folder(env: Env) -> Case:
    shutil.rmtree(env.nsd / BETAS.format(s="subj02"))
    return Case(lambda: _read_betas(env.nsd, "subj02"), r"betas folder of subj02", r"directory")


@case
def subject_not_in_design(env: Env) -> Case:
    return Case(lambda: _read_betas(env.nsd, "subj05"), r"subject='subj05'", r"only has 2 subjects")


@case
def subject_badly_named(env: Env) -> Case:
    return Case(lambda: _read_betas(env.nsd, "S1"), r"subject='S1'", r"subjNN")


@case
def session_past_the_design(env: Env) -> Case:  # a session file the design has no trials for
    os.link(env.betas(4), env.betas(9))
    return Case(
        lambda: _read_betas(env.nsd, sessions=[9]), r"betas_session09\.hdf5", r"past the design"
    )


@case
def design_missing(env: Env) -> Case:
    (env.nsd / DESIGN).unlink()
    return Case(lambda: _read_betas(env.nsd), r"nsd_expdesign\.mat", r"expected a file")


@case
def design_corrupt(env: Env) -> Case:
    _truncate(env.nsd / DESIGN, 0.3)
    return Case(lambda: _read_betas(env.nsd), r"nsd_expdesign\.mat", r"cannot read NSD design")


def _rewrite_design(env: Env, change: Callable[[dict], dict]) -> None:
    path = env.nsd / DESIGN
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    path.unlink()
    scipy.io.savemat(path, change(mat))


@case
def design_without_sharedix(env: Env) -> Case:
    _rewrite_design(env, lambda m: {k: v for k, v in m.items() if k != "sharedix"})
    return Case(lambda: _read_betas(env.nsd), r"nsd_expdesign\.mat", r"lacks \['sharedix'\]")


@case
def design_zero_based(env: Env) -> Case:
    _rewrite_design(env, lambda m: {k: v - 1 for k, v in m.items()})
    return Case(lambda: _read_betas(env.nsd), r"nsd_expdesign\.mat", r"expected 1-based")


# --- ROI volumes and label tables


def _roi(env: Env, name: str = "nsdgeneral") -> Path:
    return env.nsd / ROI.format(s="subj01") / f"{name}.nii.gz"


@case
def roi_truncated(env: Env) -> Case:
    _truncate(_roi(env), 0.5)
    return Case(lambda: _read_betas(env.nsd), r"nsdgeneral\.nii\.gz", r"cannot read ROI volume")


def _rewrite_roi(env: Env, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    path = _roi(env)
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    path.unlink()
    nib.save(nib.Nifti1Image(change(data), img.affine), path)
    return path


@case
def roi_four_dimensional(env: Env) -> Case:
    _rewrite_roi(env, lambda d: d[..., None])
    return Case(lambda: _read_betas(env.nsd), r"nsdgeneral\.nii\.gz", r"expected 3-D \(X, Y, Z\)")


@case
def roi_non_integer(env: Env) -> Case:
    _rewrite_roi(env, lambda d: d.astype(np.float32) + 0.5)
    return Case(lambda: _read_betas(env.nsd), r"nsdgeneral\.nii\.gz", r"expected -1/0/1\.\.N")


@case
def roi_wrong_axis_order(env: Env) -> Case:  # ROI saved (Z, Y, X): no longer matches the betas
    _rewrite_roi(env, lambda d: np.ascontiguousarray(d.transpose(2, 1, 0)))
    return Case(lambda: _read_betas(env.nsd), r"betas_session01\.hdf5", r"matching the ROI volume")


@case
def roi_selects_nothing(env: Env) -> Case:
    _rewrite_roi(env, lambda d: np.where(d > 0, 0, d))
    return Case(lambda: _read_betas(env.nsd), r"nsdgeneral", r"selects no voxels")


@case
def roi_label_table_missing(env: Env) -> Case:
    # a binary (-1/0/1) mask needs no table (NSD users often have none); labels 1 and 2 do
    _rewrite_roi(
        env,
        lambda d: np.where(d > 0, 1 + np.arange(d.size).reshape(d.shape) % 2, d).astype(d.dtype),
    )
    for path in (env.nsd / CTAB.format(s="subj01")).glob("nsdgeneral*"):
        path.unlink()
    for path in _roi(env).parent.glob("nsdgeneral*ctab"):
        path.unlink()
    return Case(lambda: _read_betas(env.nsd), r"nsdgeneral\.nii\.gz", r"no label table")


@case
def roi_label_not_in_table(env: Env) -> Case:
    _rewrite_roi(env, lambda d: np.where(d > 0, 7, d).astype(d.dtype))
    return Case(lambda: _read_betas(env.nsd), r"nsdgeneral\.nii\.gz", r"labels \[7\] missing")


@case
def roi_unknown_label_name(env: Env) -> Case:
    return Case(
        lambda: _read_betas(env.nsd, roi="floc-faces", roi_labels="FFA-9"),
        r"floc-faces\.nii\.gz",
        r"\['FFA-9'\] are not in",
    )


# --- stimuli, captions and features (stimulus ids without stimuli)


@case
def stimulus_ids_without_stimuli(env: Env) -> Case:
    from neurodecode.data.nsd import read_stimuli

    with h5py.File(env.nsd / STIMULI, "r") as f:
        n = f["imgBrick"].shape[0]
    return Case(lambda: read_stimuli(env.nsd, [0, n + 5]), r"nsd_stimuli\.hdf5", rf"{n} images")


@case
def stimuli_file_without_brick(env: Env) -> Case:
    from neurodecode.data.nsd import read_stimuli

    path = env.nsd / STIMULI
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4, 3), np.uint8))
    return Case(lambda: read_stimuli(env.nsd, [0]), r"nsd_stimuli\.hdf5", r"no dataset 'imgBrick'")


@case
def captions_wrong_columns(env: Env) -> Case:
    from neurodecode.data.nsd import read_captions

    path = env.nsd / CAPTIONS
    path.unlink()
    path.write_text("id,text\n0,a cat\n")
    return Case(lambda: read_captions(env.nsd), r"nsd_captions\.csv", r"'nsdId' and 'caption'")


def _datamodule(env: Env, store: Path, **kwargs):
    from neurodecode.datamodules.nsd import NSDDataModule

    module = NSDDataModule(
        str(env.nsd), str(store), feature_model="gt-projection", val_images=5, **kwargs
    )
    return lambda: module.setup("fit")


@case
def feature_store_lacks_stimuli(env: Env) -> Case:
    from neurodecode.features.store import FeatureStore

    store = env.tmp / "partial-features.h5"
    FeatureStore(store).fill(
        "gt-projection",
        "image",
        np.arange(50),
        lambda ids: np.ones((len(ids), 8)),
        {},
        progress=False,
    )
    return Case(_datamodule(env, store), r"partial-features\.h5", r"lacks \d+ of the \d+ stimulus")


@case
def feature_store_corrupt(env: Env) -> Case:
    store = env.tmp / "features.h5"
    shutil.copy(env.fixture("feature_store"), store)
    _truncate(store, 0.4)
    return Case(_datamodule(env, store), r"features\.h5", r"not a readable HDF5 file")


@case
def feature_store_wrong_entry(env: Env) -> Case:
    return Case(
        _datamodule(env, env.fixture("feature_store"), feature_layer="tokens"),
        r"layer 'tokens'",
        r"entries: gt-projection/image",
    )


@case
def feature_store_nan_features(env: Env) -> Case:
    store = env.tmp / "nan-features.h5"
    shutil.copy(env.fixture("feature_store"), store)
    with h5py.File(store, "r+") as f:
        f["gt-projection/image/features"][4, 2] = np.nan
    return Case(_datamodule(env, store), r"nan-features\.h5", r"NaN/inf.*expected finite")


# --- THINGS-MEG epochs (FIF)


@case
def fif_truncated(env: Env) -> Case:
    from neurodecode.data.things_meg import read_things_meg

    _truncate(env.meg / FIF.format(n=1), 0.5)
    return Case(lambda: read_things_meg(env.meg), r"preprocessed_P1-epo\.fif", r"MNE epochs")


@case
def fif_not_fif(env: Env) -> Case:
    from neurodecode.data.things_meg import read_things_meg

    path = env.meg / FIF.format(n=1)
    path.unlink()
    path.write_bytes(gzip.compress(b"not a fif file"))
    return Case(lambda: read_things_meg(env.meg), r"preprocessed_P1-epo\.fif", r"MNE epochs")


def _rewrite_fif(env: Env, change: Callable) -> None:
    import mne

    path = env.meg / FIF.format(n=1)
    epochs = mne.read_epochs(path, preload=True, verbose="error")
    path.unlink()
    change(epochs).save(path, verbose="error")


@case
def fif_nan_samples(env: Env) -> Case:
    from neurodecode.data.things_meg import read_things_meg

    def change(epochs):
        epochs._data[2, 1, 5] = np.nan
        return epochs

    _rewrite_fif(env, change)
    return Case(lambda: read_things_meg(env.meg), r"preprocessed_P1-epo\.fif", r"expected finite")


@case
def fif_without_trial_type(env: Env) -> Case:
    from neurodecode.data.things_meg import read_things_meg

    def change(epochs):
        epochs.metadata = epochs.metadata.drop(columns=["trial_type"])
        return epochs

    _rewrite_fif(env, change)
    return Case(lambda: read_things_meg(env.meg), r"preprocessed_P1-epo\.fif", r"'trial_type'")


@case
def fif_subject_missing(env: Env) -> Case:
    from neurodecode.data.things_meg import read_things_meg

    return Case(
        lambda: read_things_meg(env.meg, subjects=[1, 3]), r"preprocessed_P3-epo\.fif", "expected"
    )


# --- saved decoders (load_pretrained)


def _load(path: Path):
    from neurodecode import load_pretrained

    return load_pretrained(path)


@case
def pretrained_weights_truncated(env: Env) -> Case:
    folder = env.decoder()
    _truncate(folder / "model.safetensors", 0.5)
    return Case(lambda: _load(folder), r"model\.safetensors", r"readable safetensors")


@case
def pretrained_config_truncated(env: Env) -> Case:
    folder = env.decoder()
    _truncate(folder / "config.json", 0.5)
    return Case(lambda: _load(folder), r"config\.json", r"not valid JSON")


@case
def pretrained_config_unknown_key(env: Env) -> Case:
    folder = env.decoder()
    config = json.loads((folder / "config.json").read_text())
    config["init_args"]["hiden_dim"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    return Case(lambda: _load(folder), r"config\.json.*hiden_dim", r"cannot build RetrievalModule")


@case
def pretrained_pickle_only(env: Env) -> Case:  # a torch.save'd state dict is never unpickled
    import torch

    folder = env.decoder()
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    return Case(lambda: _load(folder), r"model\.safetensors", r"expected a file")


@case
def pretrained_weights_from_another_model(env: Env) -> Case:
    folder = env.decoder()
    shutil.copy(env.fixture("saved_prior") / "model.safetensors", folder / "model.safetensors")
    return Case(lambda: _load(folder), r"model\.safetensors", r"does not match the architecture")


@case
def pretrained_checkpoint_of_another_class(env: Env) -> Case:
    from neurodecode.models.retrieval import RetrievalModule

    folder = env.decoder("saved_prior")
    return Case(
        lambda: RetrievalModule.from_pretrained(folder),
        r"config\.json",
        r"expected a RetrievalModule",
    )


@case
def pretrained_lightning_ckpt_given(env: Env) -> Case:  # a .ckpt file is not a decoder folder
    path = env.tmp / "last.ckpt"
    path.write_bytes(b"PK\x03\x04")
    return Case(lambda: _load(path), r"last\.ckpt", r"expected a directory")


@case
def decoder_voxel_count_mismatch(env: Env) -> Case:  # subj02's trials through subj01's decoder
    model = _load(env.fixture("saved_decoder"))
    trials = _read_betas(env.nsd, "subj02")
    return Case(
        lambda: model.embed(trials.data, "subj01"), r"subject 'subj01'", r"expected \(B, \d+\)"
    )


# --- the command line


def _fit_args(env: Env, *extra: str, root: Path | None = None, store: Path | None = None):
    return (
        "fit",
        "-c",
        str(REPO / "experiments/sim_retrieval.yaml"),
        f"--data.init_args.root={root or env.nsd}",
        f"--data.init_args.feature_store={store or env.fixture('feature_store')}",
        "--data.init_args.feature_model=gt-projection",
        "--model.init_args.hidden_dim=8",
        "--model.init_args.n_blocks=1",
        "--model.init_args.projector_dim=8",
        "--model.init_args.prior=null",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={env.tmp / 'run'}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        *extra,
    )


@case
def cli_model_key_typo(env: Env) -> Case:
    return Case(
        lambda: _cli(*_fit_args(env, "--model.init_args.hiden_dim=3")),
        r"hiden_dim",
        r"is not accepted",
        env.tmp / "run",
    )


@case
def cli_data_key_typo(env: Env) -> Case:
    return Case(
        lambda: _cli(*_fit_args(env, "--data.init_args.feture_store=x.h5")),
        r"feture_store",
        r"is not accepted",
        env.tmp / "run",
    )


@case
def cli_unknown_section_in_yaml(env: Env) -> Case:
    config = env.tmp / "exp.yaml"
    text = (REPO / "experiments/sim_retrieval.yaml").read_text()
    config.write_text(text + "\ntrainr:\n  max_epochs: 2\n")
    return Case(lambda: _cli("fit", "-c", str(config)), r"trainr", r"does not accept option")


@case
def cli_config_file_missing(env: Env) -> Case:
    path = env.tmp / "nope.yaml"
    return Case(lambda: _cli("fit", "-c", str(path)), r"nope\.yaml", r"(?i)not|exist|found")


@case
def cli_data_root_missing(env: Env) -> Case:
    root = env.tmp / "no-such-nsd"
    return Case(
        lambda: _cli(*_fit_args(env, root=root)),
        re.escape(str(root)),
        r"expected a file",
        env.tmp / "run",
    )


@case
def cli_feature_store_missing(env: Env) -> Case:
    store = env.tmp / "missing.h5"
    return Case(
        lambda: _cli(*_fit_args(env, store=store)),
        r"missing\.h5",
        r"expected an HDF5",
        env.tmp / "run",
    )


@case
def cli_checkpoint_from_another_model(env: Env) -> Case:
    """A Lightning checkpoint of a different architecture given as ``--ckpt_path``."""
    import torch

    from neurodecode.models.prior import PriorModule

    model = PriorModule(geometry={"n_voxels": {"subj01": 10}, "target_shape": [8]})
    ckpt = env.tmp / "other.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": dict(model.hparams),
            "loops": {},
            "optimizer_states": [],
            "lr_schedulers": [],
            "callbacks": {},
        },
        ckpt,
    )
    return Case(
        lambda: _cli(*_fit_args(env, f"--ckpt_path={ckpt}")),
        r"ckpt_path",
        r"(?i)does not validate|not accepted",
        env.tmp / "run",
    )


@case
def cli_simulate_config_unknown_key(env: Env) -> Case:
    config = env.tmp / "sim.yaml"
    config.write_text((REPO / "datasets/sim/tiny.yaml").read_text() + "n_subjcts: 3\n")
    out = env.tmp / "world"
    return Case(
        lambda: _cli("simulate", "fmri", "--config", str(config), "--out", str(out)),
        r"sim\.yaml.*n_subjcts",
        r"expected only",
        out,
    )


@case
def cli_simulate_out_exists(env: Env) -> Case:
    out = env.tmp / "world"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    return Case(
        lambda: _cli(
            "simulate", "fmri", "--config", str(REPO / "datasets/sim/tiny.yaml"), "--out", str(out)
        ),
        r"--out .*world",
        r"already exists",
    )


# ----------------------------------------------------------------------------- the tests


def _left_behind(output: Path) -> list[str]:
    """Files under ``output`` and temporaries beside it (``*.partial``, ``.*.tmp-*``)."""
    found = [str(p) for p in output.rglob("*") if p.is_file()] if output.is_dir() else []
    if output.is_file():
        found.append(str(output))
    found += [str(p) for p in output.parent.glob(f"{output.name}.partial*")]
    found += [str(p) for p in output.parent.glob(f".{output.name}.tmp-*")]
    return found


def test_matrix_is_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_clear_error(name, request, tmp_path, capsys):
    env = Env(request, tmp_path)
    bad = CASES[name](env)
    capsys.readouterr()
    with pytest.raises((InvalidInputError, SystemExit)) as caught:
        bad.call()
    if isinstance(caught.value, SystemExit):
        assert caught.value.code not in (0, None), "the CLI exited with success"
        message = capsys.readouterr().err
    else:
        message = str(caught.value)
    assert re.search(bad.names, message), f"message does not name {bad.names!r}: {message}"
    assert re.search(bad.expected, message, re.S), f"message lacks {bad.expected!r}: {message}"
    if bad.output is not None:
        assert not _left_behind(bad.output), f"partial output left: {_left_behind(bad.output)}"


def test_unbroken_copies_read_fine(request, tmp_path):
    """The control: the fixtures the cases break are readable as they stand."""
    from neurodecode.data.nsd import read_captions, read_stimuli
    from neurodecode.data.things_meg import read_things_meg

    env = Env(request, tmp_path)
    trials = _read_betas(env.nsd)
    assert trials.data.shape[0] > 0 and np.isfinite(trials.data).all()
    assert read_stimuli(env.nsd, [0, 1]).shape[0] == 2
    assert read_captions(env.nsd)
    meg = read_things_meg(env.meg)
    assert meg.data.shape[:2] == (8, 5)
    model = _load(env.fixture("saved_decoder"))
    assert model.embed(trials.data[:3], "subj01").shape == (3, 8)
    _datamodule(env, env.fixture("feature_store"))()
