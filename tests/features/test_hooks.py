"""capture_activations: the same tensors as a manual forward, pooling axes, errors, clean-up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neurodecode.embedded.clip  # noqa: F401  (registers the sim-clip-* configs with open_clip)
from neurodecode.features.hooks import capture_activations, pool_activation
from neurodecode.validation import InvalidInputError


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2), nn.ReLU()),
        nn.Flatten(),
        nn.LazyLinear(5),
    ).eval()


def test_matches_manual_forward_of_submodules():
    model = small_cnn()
    x = torch.randn(2, 3, 9, 9)
    model(x)  # materialise the lazy layer
    out = capture_activations(model, ["1", "2.0", "4"], x, pooled=False)
    manual_1 = model[1](model[0](x))
    manual_20 = model[2][0](manual_1)
    manual_4 = model(x)
    torch.testing.assert_close(out["1"], manual_1, rtol=0, atol=0)
    torch.testing.assert_close(out["2.0"], manual_20, rtol=0, atol=0)
    torch.testing.assert_close(out["4"], manual_4, rtol=0, atol=0)
    assert out["2.0"].shape == (2, 6, 4, 4)

    pooled = capture_activations(model, ["2.0"], x)
    torch.testing.assert_close(pooled["2.0"], manual_20.mean(dim=(2, 3)))
    assert not pooled["2.0"].requires_grad


def test_open_clip_block_tokens():
    from neurodecode.features.clip import load_clip

    clip = load_clip("sim-clip-vit-tiny", None)
    visual = clip.model.visual
    pixels = torch.randn(3, 3, clip.image_size, clip.image_size)
    out = capture_activations(visual, ["transformer.resblocks.0"], pixels, pooled=False)
    tokens = visual._embeds(pixels)  # patch + class embeddings, position, ln_pre
    with torch.no_grad():
        manual = visual.transformer.resblocks[0](tokens)
    torch.testing.assert_close(out["transformer.resblocks.0"], manual)
    n_tokens = 1 + (clip.image_size // 8) ** 2
    assert manual.shape == (3, n_tokens, visual.transformer.width)
    pooled = capture_activations(visual, ["transformer.resblocks.0"], pixels)
    torch.testing.assert_close(pooled["transformer.resblocks.0"], manual.mean(dim=1))


def test_pooling_axes():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    torch.testing.assert_close(pool_activation(x), x.mean(dim=(2, 3)))
    t = x[:, :, :, 0]  # (N, T, D)
    torch.testing.assert_close(pool_activation(t), t.mean(dim=1))
    with pytest.raises(InvalidInputError, match="cannot pool"):
        pool_activation(torch.zeros(2))


def test_unknown_layer_lists_valid_names_and_hooks_are_removed():
    model = small_cnn()
    with pytest.raises(InvalidInputError, match=r"\['2\.O'\] are not sub-modules.*'2\.0'"):
        capture_activations(model, ["2.O"], torch.randn(1, 3, 9, 9))

    class Boom(Exception):
        pass

    def explode(module, args, output):
        raise Boom

    model[3].register_forward_hook(explode)
    with pytest.raises(Boom):
        capture_activations(model, ["1", "2"], torch.randn(1, 3, 9, 9))
    assert not model[1]._forward_hooks and not model[2]._forward_hooks


def test_module_called_twice_is_refused():
    shared = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = shared

        def forward(self, x):
            return self.shared(self.shared(x))

    with pytest.raises(InvalidInputError, match="ran 2 times"):
        capture_activations(Twice(), ["shared"], torch.randn(2, 4))
