"""NSDDataModule from `neurodecode prepare nsd` caches: the raw path's trials, a verified cache,
and a `neurodecode fit` through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.data.nsd_cache import prepare_nsd_cache
from neurodecode.datamodules.nsd import NSDDataModule
from neurodecode.validation import InvalidInputError

from ..conftest import REPO, write_projected_features

SUBJECTS = ["subj01", "subj02"]


@pytest.fixture(scope="module")
def store(tiny_nsd, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "tiny-features.h5"
    return write_projected_features(tiny_nsd, path, width=8)


@pytest.fixture(scope="module")
def caches(tiny_nsd, tmp_path_factory):
    """One cache per subject, in ``<out>/<subject>/`` (the layout ``prepared: <out>`` reads)."""
    out = tmp_path_factory.mktemp("caches")
    for subject in SUBJECTS:
        prepare_nsd_cache(tiny_nsd, subject, out / subject, progress=False)
    return out


def _module(store, **kwargs):
    args = {"feature_model": "gt-projection", "val_images": 5, "subjects": SUBJECTS}
    return NSDDataModule(feature_store=str(store), **{**args, **kwargs})


def _same_trials(a, b, averaged=False):
    """Same trials; values to float16's rounding: |error| <= |z| 2^-11 for each stored trial
    (1e-6 absolute below float16's normal range), and for repeat averages at most the mean of
    their trials' bounds, <= max |z| 2^-11."""
    for name in ("subject", "session", "stimulus_id", "repeat", "split"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.data.dtype == b.data.dtype == np.float32
    if averaged:
        np.testing.assert_allclose(a.data, b.data, rtol=0, atol=np.abs(a.data).max() * 2**-11)
    else:
        np.testing.assert_allclose(a.data, b.data, rtol=2**-11, atol=1e-6)


def test_cache_gives_the_raw_paths_trials_split_and_targets(tiny_nsd, store, caches):
    raw, cached = _module(store, root=str(tiny_nsd)), _module(store, prepared=str(caches))
    assert cached.geometry == raw.geometry
    raw.setup("fit")
    cached.setup("fit")
    for k in range(len(SUBJECTS)):
        _same_trials(raw.train_set.trials[k], cached.train_set.trials[k])
        np.testing.assert_array_equal(raw.train_set.targets[k], cached.train_set.targets[k])
    # validation and test are repeat averages of float16-rounded trials
    _same_trials(raw.val_set.trials[0], cached.val_set.trials[0], averaged=True)
    _same_trials(raw.test_trials, cached.test_trials, averaged=True)
    assert len(cached.test_trials) and (cached.test_trials.split == "test").all()
    # the values are not trivially equal: float16 rounding is there, and is all there is
    diff = np.abs(raw.train_set.trials[0].data - cached.train_set.trials[0].data)
    assert 0 < diff.max() < 4e-3


def test_root_holding_caches_and_a_subject_map_are_read_as_prepared(tiny_nsd, store, caches):
    one = _module(store, root=str(caches / "subj02"), subjects=["subj02"])
    per_subject = _module(store, root=str(caches))
    mapping = _module(store, prepared={s: str(caches / s) for s in SUBJECTS})
    raw = _module(store, root=str(tiny_nsd), subjects=["subj02"])
    assert one.geometry == raw.geometry
    assert per_subject.geometry == mapping.geometry == _module(store, root=str(tiny_nsd)).geometry
    one.setup()
    raw.setup()
    _same_trials(raw.test_trials, one.test_trials, averaged=True)


def test_wrong_subject_missing_cache_and_roi_are_refused(tiny_nsd, store, caches):
    with pytest.raises(InvalidInputError, match=r"is a cache of 'subj01'; expected 'subj02'"):
        _module(
            store, prepared={"subj01": str(caches / "subj01"), "subj02": str(caches / "subj01")}
        ).setup()
    with pytest.raises(InvalidInputError, match=r"prepared has caches of \['subj01'\]; 'subj02'"):
        _module(store, prepared={"subj01": str(caches / "subj01")}).setup()
    with pytest.raises(InvalidInputError, match="no NSD cache of subj01 at"):
        _module(store, prepared=str(tiny_nsd)).setup()
    with pytest.raises(InvalidInputError, match="holds ROI 'nsdgeneral' voxels; expected roi="):
        _module(store, prepared=str(caches), roi="floc-faces").setup()
    with pytest.raises(InvalidInputError, match="needs root"):
        NSDDataModule(feature_store=str(store)).setup()


def test_incomplete_or_damaged_cache_is_refused(tiny_nsd, store, tmp_path):
    import shutil

    out = prepare_nsd_cache(tiny_nsd, "subj01", tmp_path / "c", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["planned_sessions"] == manifest["sessions"] == [1, 2, 3, 4]
    interrupted = dict(manifest, sessions=[1, 2])  # as a prepare killed after two sessions
    (out / "manifest.json").write_text(json.dumps(interrupted))
    dm = _module(store, prepared=str(out), subjects=["subj01"])
    with pytest.raises(InvalidInputError, match=r"incomplete: sessions \[3, 4\] were planned"):
        dm.setup()
    prepare_nsd_cache(tiny_nsd, "subj01", out, progress=False)  # resumes: sessions 3, 4 only
    shutil.move(out / "session_03.npz", tmp_path / "away.npz")
    with pytest.raises(InvalidInputError, match=r"session_03\.npz fails its checksum"):
        _module(store, prepared=str(out), subjects=["subj01"]).setup()
    shutil.move(tmp_path / "away.npz", out / "session_03.npz")
    _module(store, prepared=str(out), subjects=["subj01"]).setup()


def test_fit_on_the_cache_through_the_cli(store, caches, tmp_path):
    from neurodecode.cli.main import main

    main(
        [
            "fit",
            "-c",
            str(REPO / "experiments/sim_retrieval.yaml"),
            "--data.init_args.root=null",
            f"--data.init_args.prepared={caches}",
            f"--data.init_args.feature_store={store}",
            "--data.init_args.feature_model=gt-projection",
            "--data.init_args.val_images=5",
            "--model.init_args.hidden_dim=16",
            "--model.init_args.n_blocks=1",
            "--model.init_args.projector_dim=16",
            "--model.init_args.prior=null",
            "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
    )
    assert sorted(tmp_path.rglob("*.ckpt")), "fit on the cache wrote no checkpoint"


def test_fit_on_a_folder_without_a_cache_is_one_line_exit_2(store, tmp_path, capsys):
    from neurodecode.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "fit",
                "-c",
                str(REPO / "experiments/nsd_mindeye1_subj01_prepared.yaml"),
                f"--data.init_args.prepared={tmp_path}",
                f"--data.init_args.feature_store={store}",
                "--trainer.logger=false",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("neurodecode fit: error: no NSD cache of subj01 at")
