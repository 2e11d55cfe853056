"""SAEs on ViT tokens: the AUROC search on planted labels, the token stream, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from neurodecode.analysis.sae.vision import (
    VisionTokenStream,
    auroc_table,
    label_latents,
    merge_labels,
    object_tracking_latents,
    patch_of_position,
    region_of_position,
    select_tokens,
)
from neurodecode.cli.main import main
from neurodecode.validation import InvalidInputError


def test_auroc_table_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 3))
    scores[:, 2] = np.round(scores[:, 2])  # ties count one half
    labels = rng.integers(0, 3, size=40)
    values, table = auroc_table(scores, labels)
    for v, row in zip(values, table):
        pos, neg = scores[labels == v], scores[labels != v]
        diff = pos[:, None, :] - neg[None, :, :]
        expected = ((diff > 0) + 0.5 * (diff == 0)).mean((0, 1))
        np.testing.assert_allclose(row, expected)


def test_label_latents_finds_the_planted_detector_and_not_noise():
    rng = np.random.default_rng(1)
    colour = rng.choice(["red", "blue", "green"], size=300)
    scores = np.abs(rng.normal(size=(300, 4)))
    scores[:, 1] += 3.0 * (colour == "blue")  # the planted blue detector
    result = label_latents(scores, {"colour": colour}, min_auroc=0.7, n_shuffles=10)
    rows = {r["latent"]: r for r in result["latents"]}
    assert rows[1]["matched"] and rows[1]["value"] == "blue" and rows[1]["auroc"] > 0.95
    assert rows[1]["auroc"] > result["control"]["colour"]
    assert not any(rows[j]["matched"] for j in (0, 2, 3))
    assert result["matched"] == {"colour": 1} and result["values_covered"]["colour"] == ["blue"]
    assert result["strongest"]["colour"] == {
        "latent": 1,
        "value": "blue",
        "auroc": rows[1]["auroc"],
    }
    merged = merge_labels(result, label_latents(scores, {"other": rng.integers(0, 2, 300)}))
    assert merged["latents"][0]["latent"] == 1 and set(merged["control"]) == {"colour", "other"}
    assert set(merged["strongest"]) == {"colour", "other"}


def test_strongest_reports_an_attribute_that_is_no_latents_best():
    # latent 0 detects colour perfectly and position weakly: its label is colour, but the
    # strongest position AUROC (a near miss) is still reported, on latent 0 and the planted cell
    rng = np.random.default_rng(2)
    colour = rng.choice(["red", "blue"], size=400)
    cell = rng.integers(0, 4, size=400)
    scores = np.abs(rng.normal(scale=0.1, size=(400, 3)))
    scores[:, 0] += 5.0 * (colour == "red") + 0.6 * (cell == 2)
    result = label_latents(scores, {"colour": colour, "position": cell}, n_shuffles=5)
    rows = {r["latent"]: r for r in result["latents"]}
    assert rows[0]["attribute"] == "colour" and result["matched"]["position"] == 0
    strongest = result["strongest"]["position"]
    assert strongest["latent"] == 0 and strongest["value"] == 2
    assert 0.55 < strongest["auroc"] < rows[0]["auroc"]
    with pytest.raises(InvalidInputError, match="labels for"):
        label_latents(scores, {"colour": colour[:10]})


def test_a_side_detector_is_labelled_by_its_region():
    # planted: latent 0 fires on objects in the left band (x < 0.4), as a token-level detector
    # of "object on the left" would; objects sit at x, y in [0.25, 0.75] as in the simulated world
    rng = np.random.default_rng(3)
    position = rng.uniform(0.25, 0.75, size=(600, 2))
    scores = np.abs(rng.normal(scale=0.1, size=(600, 3)))
    scores[:, 0] += 1.0 * (position[:, 0] < 0.4)
    regions = region_of_position(position)
    np.testing.assert_array_equal(
        region_of_position(np.array([[0.3, 0.7], [0.5, 0.5], [0.65, 0.1]]))["horizontal"],
        ["left", "centre", "right"],
    )
    attributes = {"position": patch_of_position(position, 8), **regions}
    result = label_latents(scores, attributes, n_shuffles=5)
    rows = {r["latent"]: r for r in result["latents"]}
    assert rows[0]["matched"] and (rows[0]["attribute"], rows[0]["value"]) == ("horizontal", "left")
    assert rows[0]["auroc"] > 0.99
    # the centre-patch label scores it lower: the band spans several patches, one value each
    assert result["strongest"]["position"]["auroc"] < rows[0]["auroc"] - 0.05
    assert result["matched"]["vertical"] == 0
    with pytest.raises(InvalidInputError, match="edges"):
        region_of_position(position, edges=(0.6, 0.4))


def test_object_tracking_finds_the_latent_whose_peak_follows_the_object():
    # planted on an 8 x 8 grid: latent 0 peaks at the object's patch (or a neighbour), latent 1
    # always at patch 27 (a position code, blind to the object), latent 2 anywhere; latent 3 fires
    # on too few images to be scored
    rng = np.random.default_rng(4)
    n, grid = 400, 8
    position = rng.uniform(0.25, 0.75, size=(n, 2))
    row, col = np.divmod(patch_of_position(position, grid), grid)
    jitter = rng.integers(-1, 2, size=(n, 2))
    follower = np.clip(row + jitter[:, 0], 0, 7) * grid + np.clip(col + jitter[:, 1], 0, 7)
    peaks = np.stack([follower, np.full(n, 27), rng.integers(0, 64, n), rng.integers(0, 64, n)], 1)
    maxima = np.ones((n, 4))
    maxima[20:, 3] = 0
    result = object_tracking_latents(peaks, maxima, position, grid, min_images=50, n_shuffles=10)
    rows = {r["latent"]: r for r in result["latents"]}
    assert set(rows) == {0, 1, 2} and result["n_tracking"] == 1
    assert rows[0]["tracking"] and rows[0]["hit_rate"] == 1.0 and rows[0]["gain"] > 0.5
    assert result["latents"][0]["latent"] == 0
    # the fixed-patch latent hits objects near patch 27 as often as the shuffled control does
    assert not rows[1]["tracking"] and rows[1]["hit_rate"] == pytest.approx(rows[1]["control_mean"])
    assert not rows[2]["tracking"] and abs(rows[2]["gain"]) < 0.1
    assert 0.1 < result["chance"] < 0.15  # 9 of 64 patches around an object in the middle
    with pytest.raises(InvalidInputError, match="outside"):
        object_tracking_latents(peaks + 64, maxima, position, grid)
    with pytest.raises(InvalidInputError, match="one object position"):
        object_tracking_latents(peaks, maxima, position[:10], grid)


def test_patch_of_position_and_token_selection():
    grid = patch_of_position(np.array([[0.1, 0.1], [0.9, 0.1], [0.3, 0.6], [1.0, 1.0]]), 4)
    np.testing.assert_array_equal(grid, [0, 3, 9, 15])
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    assert select_tokens(x, "patch").shape == (2, 4, 3)
    torch.testing.assert_close(select_tokens(x, "cls"), x[:, :1])
    with pytest.raises(InvalidInputError, match="expected"):
        select_tokens(x, "nope")


def test_stream_yields_every_token_row_of_the_images():
    class Tokens(torch.nn.Module):  # (N, 1 + 4, 2) tokens whose values name image and patch
        def __init__(self):
            super().__init__()
            self.block = torch.nn.Identity()

        def forward(self, ids):
            patch = torch.arange(5.0).expand(len(ids), 5)
            return self.block(torch.stack([ids[:, None].expand(-1, 5).float(), patch], -1))

    ids = torch.arange(12.0)

    def batches(i):
        return ids[i * 4 : (i + 1) * 4] if i < 3 else None

    stream = VisionTokenStream(Tokens(), "block", batches, batch_size=8, buffer_rows=16)
    rows = torch.cat([b for _, b in zip(range(60), stream)])  # 480 rows = 10 passes of 12 x 4
    assert rows.shape == (480, 2) and rows[:, 1].min() >= 1  # the class token is dropped
    _, counts = np.unique(rows.numpy(), axis=0, return_counts=True)
    # every (image, patch) row, each about once per pass (a few wait in the buffer)
    assert len(counts) == 48 and counts.min() >= 9 and counts.max() <= 11


def test_stream_runs_the_tower_once_when_a_pass_fits_in_the_buffer():
    # one class-token row per image: 10 images fit a 16-row buffer, so the rows of the first pass
    # are reshuffled for every later pass instead of running the tower again
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = torch.nn.Identity()
            self.calls = 0

        def forward(self, ids):
            self.calls += 1
            patch = torch.arange(3.0).expand(len(ids), 3)
            return self.block(torch.stack([ids[:, None].expand(-1, 3).float(), patch], -1))

    ids = torch.arange(10.0)
    tower = Tokens()

    def batches(i):
        return ids[i * 4 : (i + 1) * 4] if i < 3 else None

    stream = VisionTokenStream(
        tower, "block", batches, batch_size=4, tokens="cls", buffer_rows=16, seed=1
    )
    drawn = [b for _, b in zip(range(50), stream)]  # 200 rows = 20 passes of 10 images
    rows = torch.cat(drawn)
    assert tower.calls == 3  # one pass of three image batches
    assert rows.shape == (200, 2) and bool((rows[:, 1] == 0).all())  # class tokens only
    _, counts = np.unique(rows[:, 0].numpy(), return_counts=True)
    np.testing.assert_array_equal(counts, np.full(10, 20))  # every image once per pass
    assert not torch.equal(rows[:10, 0].sort().values, rows[:10, 0])  # shuffled, not in order
    # a batch larger than one pass is filled from the next passes
    wide = VisionTokenStream(
        Tokens(), "block", batches, batch_size=25, tokens="cls", buffer_rows=32
    )
    first = next(iter(wide))
    assert first.shape == (25, 2)
    _, counts = np.unique(first[:20, 0].numpy(), return_counts=True)
    assert len(counts) == 10 and counts.max() == 2


def test_vision_token_sae_runs_through_the_cli(tmp_path):
    config = {
        "run_dir": str(tmp_path / "run"),
        "seed": 0,
        "data": {
            "source": "vision_tokens",
            "model_name": "sim-clip-vit-tiny",
            "layer": "visual.transformer.resblocks.0",
            "tokens": "patch",
            "n_images": 240,
            "image_batch_size": 60,
            "buffer_rows": 2048,
            "n_shuffles": 5,
        },
        "sae": {"architecture": "topk", "n_latents": 48, "k": 4},
        "training": {"steps": 80, "batch_size": 256, "lr": 3.0e-3, "accelerator": "cpu"},
        "evaluation": {"dashboard_latents": 3, "dashboard_top": 3},
    }
    path = tmp_path / "vision.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "sae", "--config", str(path)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["fvu"] < 1 and metrics["l0"] <= 4
    assert metrics["source"]["tokens_per_image"] == 16  # 32 px / 8 px patches, no class token
    labels = json.loads((run / "latent_labels.json").read_text())
    control = metrics["labels"]["control"]
    planted = [
        r for r in labels if r["matched"] and r["attribute"] in ("category", "colour", "position")
    ]
    assert planted, "no latent matched a planted category, colour or position"
    assert all(r["auroc"] > control[r["attribute"]] for r in planted)
    tracking = json.loads((run / "object_tracking.json").read_text())
    summary = metrics["object_tracking"]
    assert summary["n_scored"] == len(tracking) and summary["radius"] == 1
    assert summary["n_tracking"] == sum(r["tracking"] for r in tracking)
    assert all(r["tracking"] <= (r["hit_rate"] > r["control_max"]) for r in tracking)
    assert (run / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vision_tokens_refuses_transcoders_and_bad_tokens(tmp_path, capsys):
    base = {
        "run_dir": str(tmp_path / "run"),
        "data": {"source": "vision_tokens", "layer": "transformer.resblocks.0"},
        "sae": {"architecture": "topk", "n_latents": 8, "k": 2},
    }
    for change, message in (
        ({"data": {**base["data"], "tokens": "rows"}}, "data.tokens"),
        ({"sae": {**base["sae"], "transcoder": True}}, "trains SAEs"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(SystemExit) as exit_info:
            main(["analyze", "sae", "--config", str(path)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("neurodecode analyze: error: ") and err.count("\n") == 1
        assert message in err
