"""`neurodecode extract` on an NSD-layout stimulus brick and on an image folder; `train-clip`."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from neurodecode.cli.main import main
from neurodecode.data.stimuli import NSD_STIMULI, open_stimuli
from neurodecode.features.store import FeatureStore
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError


@pytest.fixture
def nsd_root(tmp_path):
    stimuli = generate_stimuli(12, size=32, seed=4)
    brick = tmp_path / "nsd" / NSD_STIMULI
    brick.parent.mkdir(parents=True)
    with h5py.File(brick, "w") as f:
        f["imgBrick"] = stimuli.images
    with open(brick.with_name("nsd_captions.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["nsdId", "category", "caption"])
        for i, (cat, cap) in enumerate(zip(stimuli.category, stimuli.captions)):
            writer.writerow([i, cat, cap])
    return tmp_path / "nsd", stimuli


def write_config(path, **entries):
    path.write_text(yaml.safe_dump(entries))
    return path


def test_extract_nsd_layout(tmp_path, nsd_root, tiny_clip):
    root, stimuli = nsd_root
    store_path = tmp_path / "features.h5"
    config = write_config(
        tmp_path / "extract.yaml",
        stimuli=str(root),
        store=str(store_path),
        ids={"start": 2, "stop": 10},
        model={"name": "sim-clip", "preset": "tiny"},
        outputs=["image", "text"],
        layers=["trunk.features.7"],  # second conv stage, after its max-pool
        batch_size=3,
        device="cpu",
    )
    assert main(["extract", "--config", str(config), "--quiet"]) == 0
    store = FeatureStore(store_path)
    model = "sim-clip-tiny"
    assert set(store.keys()) == {
        (model, "image"),
        (model, "text"),
        (model, "visual.trunk.features.7"),
    }
    ids = [str(i) for i in range(2, 10)]
    assert store.stimulus_ids(model, "image").tolist() == ids
    expected = tiny_clip.encode_image(stimuli.images[2:10]).numpy()
    np.testing.assert_allclose(store.read(model, "image", ids), expected, rtol=1e-4, atol=1e-5)
    text = tiny_clip.encode_text(stimuli.captions[2:10]).numpy()
    np.testing.assert_allclose(store.read(model, "text", ids), text, rtol=1e-4, atol=1e-5)
    assert store.read(model, "visual.trunk.features.7", ids).shape == (8, 32)  # pooled channels
    assert (
        store.settings(model, "image")["checkpoint_sha256"]
        == (tiny_clip.settings["checkpoint_sha256"])
    )

    # a rerun over more ids computes only the new ones
    config = write_config(
        tmp_path / "more.yaml",
        stimuli=str(root),
        store=str(store_path),
        model={"name": "sim-clip", "preset": "tiny"},
        outputs=["image"],
    )
    assert main(["extract", "--config", str(config), "--quiet"]) == 0
    assert len(store.stimulus_ids(model, "image")) == 12


def test_extract_image_folder_and_open_clip_model(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    stimuli = generate_stimuli(3, size=24, seed=1)
    for name, image in zip(["b", "a", "c"], stimuli.images):
        Image.fromarray(image).save(folder / f"{name}.png")
    source = open_stimuli(folder)
    assert source.kind == "folder" and source.ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(source.load(["b"])[0], stimuli.images[0])
    config = write_config(
        tmp_path / "x.yaml",
        stimuli=str(folder),
        store=str(tmp_path / "s.h5"),
        model={"name": "sim-clip-vit-tiny"},
        outputs=["image", "image_tokens"],
        device="cpu",
    )
    assert main(["extract", "--config", str(config), "--quiet"]) == 0
    store = FeatureStore(tmp_path / "s.h5")
    name = "sim-clip-vit-tiny@random"
    assert store.keys() == [(name, "image"), (name, "image_tokens")]
    pooled = store.read(name, "image", ["c", "a"])
    tokens = store.read(name, "image_tokens", ["c", "a"])
    assert pooled.shape == (2, 64) and tokens.shape == (2, 17, 64)  # class token + 4 x 4 patches
    np.testing.assert_allclose(tokens[:, 0], pooled, rtol=1e-4, atol=1e-5)


def test_bad_configs(tmp_path, nsd_root):
    root, _ = nsd_root
    with pytest.raises(InvalidInputError, match="unknown keys \\['modle'\\]"):
        main(
            [
                "extract",
                "--config",
                str(write_config(tmp_path / "a.yaml", stimuli=str(root), store="s.h5", modle={})),
                "--debug",
            ]
        )
    with pytest.raises(InvalidInputError, match="lacks 'store'"):
        main(
            [
                "extract",
                "--config",
                str(write_config(tmp_path / "b.yaml", stimuli=str(root))),
                "--debug",
            ]
        )
    with pytest.raises(InvalidInputError, match="expected an NSD-layout root"):
        open_stimuli(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="not a row of imgBrick"):
        open_stimuli(root).load(["12"])


def test_train_clip_command_uses_cache(tiny_clip, capsys):
    assert main(["train-clip", "--preset", "tiny", "--quiet"]) == 0
    assert '"category_accuracy"' in capsys.readouterr().out
