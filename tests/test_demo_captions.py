"""Brain -> caption on the tiny world: the sim captioner names the planted category from true
embeddings, the controls order as they must, and ``reconstruct --captions`` writes its csv."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from neurodecode.cli.main import main


@pytest.fixture(scope="module")
def clip_and_captioner():
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.embedded.prefix_captioner import get_sim_prefix_captioner

    clip = get_sim_clip("tiny", progress=False)
    return clip, get_sim_prefix_captioner(clip, preset="tiny", progress=False)


def test_true_embeddings_name_the_category_and_controls_order(
    tiny_nsd, clip_and_captioner, tmp_path
):
    from neurodecode.data.nsd import read_stimuli
    from neurodecode.demo.captions import CSV_COLUMNS, caption_and_score
    from neurodecode.sim.ground_truth import read_ground_truth

    clip, captioner = clip_and_captioner
    ids = read_ground_truth(tiny_nsd).sharedix
    true = clip.encode_image(read_stimuli(tiny_nsd, ids), normalize=True).float()
    # a stand-in decoder: the true embeddings plus noise (a real one is in test_demo.py)
    noisy = true + 0.8 * true.std() * torch.randn(
        true.shape, generator=torch.Generator().manual_seed(0)
    )
    result = caption_and_score(noisy, ids, tiny_nsd, clip, captioner, tmp_path / "captions.csv")
    ceiling, shuffled = result["true_embedding"], result["shuffled"]
    # chance = the hit rate of the same captions paired with every other image (about 1/6 here,
    # the test images' category mix); the tiny captioner measured 0.48 against 0.20
    assert ceiling["category_hit_rate"] > shuffled["category_hit_rate"] + 0.15
    assert ceiling["category_hit_rate"] > 0.3
    if result["scorer"] is not None:  # MiniLM installed
        assert ceiling["similarity"] > shuffled["similarity"]
        assert ceiling["two_way"] > 0.6
        assert result["decoded"]["similarity"] > shuffled["similarity"]
    rows = list(csv.DictReader(open(tmp_path / "captions.csv")))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(ids)
    assert [int(r["stimulus_id"]) for r in rows] == [int(i) for i in ids]
    assert all(
        r["caption_decoded"] and r["caption_true_embedding"] and r["true_caption"] for r in rows
    )
    assert "| from true image embeddings (captioner ceiling) |" in result["table"]


def test_reconstruct_captions_writes_a_csv(clip_and_captioner, tmp_path):
    from neurodecode.models.retrieval import RetrievalModule

    clip, _ = clip_and_captioner
    model = RetrievalModule(
        geometry={"n_voxels": {"subj01": 12}, "target_shape": [clip.embed_dim]},
        hidden_dim=16,
        n_blocks=1,
        projector_dim=16,
        prior={"depth": 1, "num_heads": 2, "head_dim": 8},
        prior_inference_steps=2,
    )
    model.save_pretrained(tmp_path / "decoder")
    np.save(
        tmp_path / "brain.npy", np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    )
    argv = [
        "reconstruct",
        "--model",
        str(tmp_path / "decoder"),
        "--input",
        str(tmp_path / "brain.npy"),
    ]
    argv += ["--out", str(tmp_path / "out"), "--clip-preset", "tiny", "--num-samples", "1"]
    assert main([*argv, "--trials", "0,2", "--captions"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out/captions.csv")))
    assert [(r["row"], r["trial"]) for r in rows] == [("0", "0"), ("1", "2")]
    for r in rows:
        assert r["caption"].strip() and (tmp_path / "out" / r["file"]).is_file()


def test_unknown_captioner_preset_is_one_clear_error(clip_and_captioner):
    from neurodecode.embedded.prefix_captioner import get_sim_prefix_captioner
    from neurodecode.validation import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"preset='huge'.*'default', 'tiny'"):
        get_sim_prefix_captioner(clip_and_captioner[0], preset="huge")
