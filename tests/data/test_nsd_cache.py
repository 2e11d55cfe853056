"""NSD cache: same trials as the reader, resume after a kill, checksums, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.data.nsd import read_nsd_betas
from neurodecode.data.nsd_cache import open_nsd_cache, prepare_nsd_cache
from neurodecode.validation import InvalidInputError


def test_cache_matches_the_reader(tiny_nsd, tmp_path):
    out = prepare_nsd_cache(tiny_nsd, "subj01", tmp_path / "c", progress=False)
    cached = open_nsd_cache(out)
    direct = read_nsd_betas(tiny_nsd, "subj01", progress=False)
    np.testing.assert_allclose(cached.data, direct.data, atol=2e-2)
    for name in ("session", "stimulus_id", "repeat", "split"):
        assert np.array_equal(getattr(cached, name), getattr(direct, name))
    assert np.array_equal(cached.info["voxel_ijk"], direct.info["voxel_ijk"])


def test_resume_keeps_completed_sessions(tiny_nsd, tmp_path):
    out = prepare_nsd_cache(tiny_nsd, "subj01", tmp_path / "c", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    first = manifest["sessions"][0]
    # simulate a kill after the first session: the manifest records one session only
    manifest["sessions"] = [first]
    manifest["files"] = {
        k: v for k, v in manifest["files"].items() if k in ("voxel_ijk.npy", f"session_{first:02d}.npz")
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    kept = (out / f"session_{first:02d}.npz").stat().st_mtime_ns
    prepare_nsd_cache(tiny_nsd, "subj01", out, progress=False)
    assert (out / f"session_{first:02d}.npz").stat().st_mtime_ns == kept
    assert len(open_nsd_cache(out)) == len(read_nsd_betas(tiny_nsd, "subj01", progress=False))


def test_truncated_file_fails_its_checksum(tiny_nsd, tmp_path):
    out = prepare_nsd_cache(tiny_nsd, "subj01", tmp_path / "c", progress=False)
    path = out / "session_01.npz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvalidInputError, match="session_01.npz fails its checksum"):
        open_nsd_cache(out)
    with pytest.raises(InvalidInputError, match=r"sessions \[99\] are not in the cache"):
        open_nsd_cache(out, sessions=[99])


def test_bad_root_is_one_line_exit_2(tmp_path, capsys):
    from neurodecode.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["prepare", "nsd", "--root", str(tmp_path), "--subject", "subj01", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("neurodecode prepare: error:") and "\n" not in err


def test_wrong_voxel_count_is_named(tiny_nsd, tmp_path):
    from neurodecode.data.nsd_cache import _sha256

    out = prepare_nsd_cache(tiny_nsd, "subj01", tmp_path / "c", progress=False)
    np.save(out / "voxel_ijk.npy", np.load(out / "voxel_ijk.npy")[:-3])
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["voxel_ijk.npy"] = _sha256(out / "voxel_ijk.npy")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match="voxels; expected"):
        open_nsd_cache(out)


def test_partial_download_is_cached_and_its_missing_sessions_said(tiny_nsd, tmp_path, caplog):
    import shutil

    root = tmp_path / "nsd"
    shutil.copytree(tiny_nsd, root)
    betas = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    (betas / "betas_session02.hdf5").unlink()
    with caplog.at_level("WARNING", logger="neurodecode.data.nsd_cache"):
        out = prepare_nsd_cache(root, "subj01", tmp_path / "c", progress=False)
    said = [r.getMessage() for r in caplog.records if r.name == "neurodecode.data.nsd_cache"]
    assert len(said) == 1 and "3 of 4 sessions found" in said[0] and "missing: 2" in said[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sessions"] == [1, 3, 4] and manifest["missing_sessions"] == [2]
    assert sorted(set(open_nsd_cache(out).session)) == [1, 3, 4]
