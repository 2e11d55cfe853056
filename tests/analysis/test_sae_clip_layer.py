"""The layer named by experiments/sae_clip.yaml (and bench_sae's transcoder row) exists in the
sim-clip image tower and gives feature rows: run the lookup and a capture on the tiny preset."""

import inspect
import re
from pathlib import Path

import torch

from neurodecode.analysis.sae.training import HookedActivationStream
from neurodecode.cli.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _config_layer() -> str:
    return load_config(ROOT / "experiments" / "sae_clip.yaml")["data"]["layer"]


def test_sae_clip_layer_captures_feature_rows_on_tiny_sim_clip():
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.sim.stimuli import generate_stimuli

    encoder = get_sim_clip("tiny", progress=False)
    stimuli = generate_stimuli(5, size=encoder.image_size, seed=3)
    stream = HookedActivationStream(  # raises InvalidInputError for a layer the tower lacks
        encoder.model,
        _config_layer(),
        lambda i: None,
        capture="io",
        forward=lambda model, pixels: model.encode_image(pixels),
    )
    inputs, outputs = stream.capture_batch(encoder.preprocess_images(stimuli.images))
    embedding = encoder.encode_image(stimuli.images, normalize=False)
    # one row per image, and the output rows are the (unnormalised) image embedding itself
    assert inputs.shape[0] == outputs.shape[0] == 5
    assert outputs.shape[1] == embedding.shape[1]
    torch.testing.assert_close(outputs, embedding.float(), atol=1e-4, rtol=1e-4)


def test_bench_sae_transcoder_row_uses_the_config_layer():
    from benchmarks import bench_sae

    source = inspect.getsource(bench_sae.bench_clip_transcoders)
    assert re.findall(r'layer = "([^"]+)"', source) == [_config_layer()]
