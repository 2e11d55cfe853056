"""Reconstructor composition (embeddings, low-level init, best-of-n) and the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.plotting.reconstructions import plot_reconstructions
from neurodecode.reconstruct.reconstructor import Reconstructor, blend_images, select_best
from neurodecode.validation import InvalidInputError

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def mean_colour(images: np.ndarray) -> torch.Tensor:
    """Embedding = mean RGB of uint8 images (N, H, W, 3)."""
    return torch.from_numpy(images).float().mean(dim=(1, 2)) / 255


class ColourGenerator:
    """Sample k is a flat image of COLOURS[k]; records what it was called with."""

    image_size = 8
    embed_dim = 3

    def __init__(self):
        self.calls = []

    def generate(
        self,
        image_embeds,
        init_images=None,
        strength=0.6,
        num_samples=1,
        num_inference_steps=20,
        generator=None,
    ):
        self.calls.append(
            dict(embeds=image_embeds, init=init_images, strength=strength, num_samples=num_samples)
        )
        flat = COLOURS[:num_samples].view(1, num_samples, 3, 1, 1)
        return flat.expand(len(image_embeds), num_samples, 3, 8, 8).clone()


def test_select_best_picks_the_most_similar_sample():
    samples = COLOURS.view(1, 4, 3, 1, 1).expand(3, 4, 3, 8, 8)
    targets = torch.stack([COLOURS[2], COLOURS[0] + 0.1, COLOURS[3]])
    best, index, scores = select_best(samples, targets, mean_colour)
    assert index.tolist() == [2, 0, 3]
    torch.testing.assert_close(best[:, :, 0, 0], COLOURS[[2, 0, 3]])
    assert scores.shape == (3, 4)
    assert scores[0, 2] == pytest.approx(1.0)


def test_reconstructor_composes_decoder_lowlevel_and_generator():
    brain = torch.randn(5, 10)
    targets = COLOURS[[1, 3, 0, 2, 1]]
    blur = torch.full((5, 3, 4, 4), 0.5)
    generator = ColourGenerator()
    recon = Reconstructor(
        lambda b: targets[: len(b)],
        generator,
        lowlevel=lambda b: blur[: len(b)],
        strength=0.3,
        num_samples=4,
        select_with=mean_colour,
    ).reconstruct(brain)
    assert recon.selected.tolist() == [1, 3, 0, 2, 1]
    assert recon.images.shape == (5, 3, 8, 8) and recon.samples.shape == (5, 4, 3, 8, 8)
    assert torch.equal(recon.lowlevel, blur)
    call = generator.calls[0]
    assert call["strength"] == 0.3 and call["num_samples"] == 4
    assert torch.equal(call["init"], blur)
    assert torch.equal(recon.embeds, targets)


def test_reconstructor_batches_and_keeps_first_sample_without_selection():
    generator = ColourGenerator()
    done = []
    recon = Reconstructor(
        lambda b: torch.ones(len(b), 3), generator, num_samples=2, batch_size=2
    ).reconstruct(np.zeros((5, 4)), progress=done.append)
    assert len(generator.calls) == 3 and done == [2, 2, 1]
    assert generator.calls[0]["init"] is None
    assert recon.selected.tolist() == [0] * 5
    with pytest.raises(InvalidInputError, match="trials, voxels"):
        Reconstructor(lambda b: b, generator).reconstruct(torch.zeros(3))


def test_plot_reconstructions_writes_a_figure(tmp_path):
    stimuli = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    recons = torch.rand(3, 3, 8, 8)
    path = plot_reconstructions(stimuli, torch.rand(3, 3, 8, 8), recons, tmp_path / "f.png")
    assert path.stat().st_size > 1000
    narrow = plot_reconstructions(stimuli, None, recons, tmp_path / "g.png", n_rows=2)
    wide = plot_reconstructions(
        stimuli, None, recons, tmp_path / "w.png", n_rows=2, extra_columns={"ceiling": recons}
    )
    from PIL import Image

    assert Image.open(wide).size[0] == pytest.approx(1.5 * Image.open(narrow).size[0], abs=2)
    with pytest.raises(InvalidInputError, match="ceiling"):
        plot_reconstructions(
            stimuli, None, recons, tmp_path / "x.png", extra_columns={"ceiling": recons[:1]}
        )
    with pytest.raises(InvalidInputError, match="same non-zero number"):
        plot_reconstructions(stimuli, None, recons[:2], tmp_path / "h.png")


def test_blend_images_rgb_and_luminance():
    from neurodecode.evaluate.image_metrics import rgb_to_gray

    generated = torch.tensor([0.6, 0.3, 0.2]).view(1, 3, 1, 1).expand(2, 3, 8, 8).clone()
    lowlevel = torch.full((2, 3, 4, 4), 0.5)
    rgb = blend_images(generated, lowlevel, 0.25)
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([0.575, 0.35, 0.275]))
    lum = blend_images(generated, lowlevel, 1.0, mode="luminance")
    assert lum.shape == (2, 3, 8, 8)
    # luminance taken from the low-level image, colour differences kept from the generated one
    torch.testing.assert_close(rgb_to_gray(lum), torch.full((2, 8, 8), 0.5))
    torch.testing.assert_close(lum[:, 0] - lum[:, 1], generated[:, 0] - generated[:, 1])
    torch.testing.assert_close(blend_images(generated, lowlevel, 0.0, "luminance"), generated)
    with pytest.raises(InvalidInputError, match="blend mode"):
        blend_images(generated, lowlevel, 0.5, mode="hsv")
    with pytest.raises(InvalidInputError, match=r"expected \[0, 1\]"):
        blend_images(generated, lowlevel, 1.5)


def test_reconstructor_blends_the_selected_sample_with_the_lowlevel_image():
    blur = torch.full((3, 3, 4, 4), 0.5)
    recon = Reconstructor(
        lambda b: COLOURS[[0, 1, 2]][: len(b)],
        ColourGenerator(),
        lowlevel=lambda b: blur[: len(b)],
        num_samples=4,
        select_with=mean_colour,
        blend=0.5,
    ).reconstruct(torch.zeros(3, 2))
    # selected flat colours, half-way to grey; the raw samples stay unblended
    torch.testing.assert_close(recon.images[:, :, 0, 0], 0.5 * COLOURS[[0, 1, 2]] + 0.25)
    assert torch.equal(recon.samples[:, 0, :, 0, 0], COLOURS[[0, 0, 0]])


class EchoGenerator(ColourGenerator):
    """Each sample is a flat image of its condition (the first three values, clipped)."""

    def generate(self, image_embeds, init_images=None, num_samples=1, guidance_scale=None, **kw):
        self.calls.append(dict(embeds=image_embeds, init=init_images, guidance=guidance_scale))
        flat = image_embeds[:, None, :3, None, None].clamp(0, 1)
        return flat.expand(len(image_embeds), num_samples, 3, 8, 8).clone()


def test_reconstructor_conditions_each_sample_on_its_own_embedding():
    brain = torch.randn(2, 10)
    # trial 0: its second condition is what the decoder predicts; trial 1: its third
    per_sample = torch.stack([COLOURS[[0, 2, 1]], COLOURS[[3, 1, 0]]])
    predicted = torch.stack([COLOURS[2], COLOURS[0]])
    blur = torch.full((2, 3, 4, 4), 0.5)
    generator = EchoGenerator()
    recon = Reconstructor(
        lambda b: predicted[: len(b)],
        generator,
        lowlevel=lambda b: blur[: len(b)],
        num_samples=3,
        select_with=mean_colour,
        sample_conditions=lambda b: per_sample[: len(b)],
        guidance_scale=2.5,
    ).reconstruct(brain)
    assert recon.selected.tolist() == [1, 2]
    torch.testing.assert_close(recon.samples[:, :, :, 0, 0], per_sample)
    call = generator.calls[0]  # one draw per condition, each with its trial's init image
    assert call["embeds"].shape == (6, 3) and call["init"].shape == (6, 3, 4, 4)
    assert call["guidance"] == 2.5
    with pytest.raises(InvalidInputError, match="one embedding per sample"):
        Reconstructor(
            lambda b: predicted[: len(b)],
            generator,
            num_samples=2,
            sample_conditions=lambda b: per_sample[: len(b)],
        ).reconstruct(brain)
