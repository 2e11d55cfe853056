"""ClipCap prefix captioner: learns simulated captions, round-trips, plugs into voxel captions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import neurodecode
from neurodecode.analysis.captioning import caption_voxels
from neurodecode.analysis.prefix_captioner import (
    ClipPrefixCaptioner,
    PrefixMappingConfig,
    train_prefix_captioner,
)
from neurodecode.embedded.caption_bank import caption_category
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def tiny_clip():
    from neurodecode.embedded.clip import get_sim_clip

    return get_sim_clip("tiny", progress=False)


def _embed(clip, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return clip.encode_image(images, normalize=True).float()


@pytest.fixture(scope="module")
def captioner(tiny_clip):
    stimuli = generate_stimuli(480, size=32, seed=11)
    config = PrefixMappingConfig(embed_dim=tiny_clip.embed_dim, hidden_dim=64, num_beams=3)
    return train_prefix_captioner(
        _embed(tiny_clip, stimuli.images),
        list(stimuli.captions),
        config,
        n_layer=1,
        n_embd=64,
        steps=150,
    )


def test_captioner_names_the_category_of_held_out_images(tiny_clip, captioner):
    held_out = generate_stimuli(90, size=32, seed=12)
    texts = captioner.generate(_embed(tiny_clip, held_out.images))
    assert len(texts) == 90 and all(isinstance(t, str) and t for t in texts)
    accuracy = np.mean([caption_category(t) == c for t, c in zip(texts, held_out.category)])
    assert accuracy > 0.35  # chance 1/6; a captioner that ignored the prefix would say one thing
    assert len(set(texts)) > 5


def test_save_load_round_trip_and_voxel_captions(tiny_clip, captioner, tmp_path):
    folder = captioner.save_pretrained(tmp_path / "cap")
    assert {"config.json", "model.safetensors", "tokenizer"} <= {p.name for p in folder.iterdir()}
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    again = ClipPrefixCaptioner.from_pretrained(folder)
    assert isinstance(neurodecode.load_pretrained(folder), ClipPrefixCaptioner)
    emb = _embed(tiny_clip, generate_stimuli(6, size=32, seed=13).images)
    assert again.generate(emb) == captioner.generate(emb)
    # as the prefix captioner of BrainSCUBA's voxel captions
    pool = _embed(tiny_clip, generate_stimuli(50, size=32, seed=14).images).numpy()
    out = caption_voxels(pool[:3] + 0.01, pool, pool[:4], ["a", "b", "c", "d"], captioner=again)
    assert out.generated is not None and len(out.generated) == 3
    assert out.best == out.generated


def test_errors(captioner, tmp_path):
    with pytest.raises(InvalidInputError, match=r"config\.json"):
        ClipPrefixCaptioner.from_pretrained(tmp_path)
    folder = captioner.save_pretrained(tmp_path / "cap")
    meta = json.loads((folder / "config.json").read_text())
    generator = "neurodecode.embedded.generator.ConditionedUNet"
    (folder / "config.json").write_text(json.dumps({**meta, "class_path": generator}))
    with pytest.raises(InvalidInputError, match="ConditionedUNet"):
        ClipPrefixCaptioner.from_pretrained(folder)
    bad = {**meta, "init_args": {**meta["init_args"], "mapping": {"beams": 2}}}
    (folder / "config.json").write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError, match="beams"):
        ClipPrefixCaptioner.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(meta))
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(InvalidInputError, match="tokenizer"):
        ClipPrefixCaptioner.from_pretrained(folder)
    d = captioner.config.embed_dim
    with pytest.raises(InvalidInputError, match=f"expected \\(N, {d}\\)"):
        captioner.generate(torch.zeros(2, d + 1))
    with pytest.raises(InvalidInputError, match="NaN"):
        captioner.generate(torch.full((1, d), float("nan")))
    with pytest.raises(InvalidInputError, match="N captions"):
        train_prefix_captioner(np.zeros((3, d)), ["a", "b"], steps=1)


def test_captions_runner_with_a_saved_captioner(tiny_nsd, captioner, tmp_path):
    import csv

    from neurodecode.cli.analyze_cortex import run_captions

    folder = captioner.save_pretrained(tmp_path / "cap")
    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"root": str(tiny_nsd), "subject": "subj01"},
        "features": {"source": "sim_clip", "preset": "tiny"},
        "captions": {"bank_images": 200, "prefix_captioner": str(folder)},
    }
    run_dir = run_captions(config)
    with open(run_dir / "voxel_captions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["generated"] for r in rows)
    per_roi = json.loads((run_dir / "captions.json").read_text())
    assert 0.0 <= per_roi["PPA"]["fraction_correct_generated"] <= 1.0
    assert isinstance(per_roi["PPA"]["roi_average_generated"], str)
    with pytest.raises(InvalidInputError, match="takes 7-D embeddings"):
        small = ClipPrefixCaptioner(
            PrefixMappingConfig(embed_dim=7), captioner.language_model, captioner.tokenizer
        )
        run_captions(
            {**config, "captions": {"prefix_captioner": str(small.save_pretrained(tmp_path / "s"))}}
        )


def test_sim_prefix_captioner_is_cached(tiny_clip, tmp_path, monkeypatch):
    from neurodecode.embedded import prefix_captioner
    from neurodecode.embedded.prefix_captioner import get_sim_prefix_captioner

    options = dict(n_stimuli=32, steps=2, cache_dir=tmp_path, progress=False, n_layer=1, n_embd=32)
    first = get_sim_prefix_captioner(tiny_clip, **options)
    folders = list((tmp_path / "prefix-captioner").iterdir())
    assert len(folders) == 1 and (folders[0] / "config.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(prefix_captioner, "train_prefix_captioner", no_training)
    again = get_sim_prefix_captioner(tiny_clip, **options)  # loaded, not retrained
    for (k, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert len(list((tmp_path / "prefix-captioner").iterdir())) == 1
