"""MindEye's reconstruction metrics against closed forms, hand counts and second implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from neurodecode.evaluate.image_metrics import (
    ImageMetrics,
    compare_methods,
    correlation_distance,
    feature_networks,
    metric_table,
    pixcorr,
    pixcorr_per_image,
    reconstruction_metrics,
    ssim,
    ssim_per_image,
    two_way_identification,
    two_way_identification_per_image,
)
from neurodecode.validation import InvalidInputError


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(5, 3, 24, 24, generator=torch.Generator().manual_seed(0))


def test_pixcorr_identical_affine_and_negated(images):
    assert pixcorr(images, images, size=None) == pytest.approx(1.0)
    assert pixcorr(images, 0.5 * images + 0.2, size=None) == pytest.approx(1.0)
    assert pixcorr(images, 1.0 - images, size=None) == pytest.approx(-1.0)


def test_pixcorr_equals_numpy_corrcoef(images):
    other = torch.rand(5, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    expected = [
        np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1] for a, b in zip(other, images)
    ]
    np.testing.assert_allclose(pixcorr_per_image(other, images, size=None), expected, atol=1e-10)


def test_pixcorr_accepts_uint8_and_resizes_to_common_size(images):
    uint8 = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    bigger = torch.nn.functional.interpolate(images, size=(48, 48), mode="bilinear")
    assert pixcorr(uint8, images, size=None) > 0.999
    assert pixcorr(bigger, images, size=48) == pytest.approx(1.0)  # stimuli upsampled alike
    with pytest.raises(InvalidInputError, match="common size"):
        pixcorr(bigger, images, size=None)


def test_ssim_identical_is_one(images):
    np.testing.assert_allclose(ssim_per_image(images, images, size=None), 1.0, atol=1e-12)


def test_ssim_constant_images_closed_form():
    # constant grey levels a and b: variances vanish and SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.7, 0.01**2
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    assert ssim(x, y, size=None) == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1))


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """skimage's Gaussian SSIM (population covariance, data range 1) written with scipy."""

    def blur(z):
        return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_matches_scipy_reference_and_skimage(images):
    noisy = images + 0.2 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    noisy = noisy.clamp(0, 1)
    weights = np.array([0.2125, 0.7154, 0.0721])
    gray = lambda t: np.einsum("chw,c->hw", t.numpy().astype(np.float64), weights)  # noqa: E731
    expected = [_ssim_reference(gray(a), gray(b)) for a, b in zip(noisy, images)]
    got = ssim_per_image(noisy, images, size=None)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert 0.0 < got.mean() < 0.9
    skimage_metrics = pytest.importorskip("skimage.metrics")
    sk = [
        skimage_metrics.structural_similarity(
            gray(a),
            gray(b),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for a, b in zip(noisy, images)
    ]
    np.testing.assert_allclose(got, sk, atol=1e-8)


def test_two_way_identification_on_planted_features():
    # Rows of a Hadamard matrix (without the constant row) are zero-mean and orthogonal, so the
    # correlation between combinations equals the cosine of their coefficient vectors.
    h = np.array([[1]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    s = h[1:5].astype(float)  # 4 stimuli, 8 features
    recons = np.stack(
        [
            s[0],  # own r = 1, others 0 -> 3 of 3 lower
            s[2],  # own r = 0, stimulus 2 r = 1 -> 0 of 3 lower
            s[2] + 0.5 * s[3],  # own .894, s3 .447, others 0 -> 3 of 3
            0.5 * s[3] + s[0],  # own .447, s0 .894, others 0 -> 2 of 3
        ]
    )
    np.testing.assert_allclose(two_way_identification_per_image(recons, s), [1, 0, 1, 2 / 3])
    assert two_way_identification(recons, s) == pytest.approx((1 + 0 + 1 + 2 / 3) / 4)


def test_two_way_identification_ties_are_not_wins():
    same = np.tile(np.arange(6.0), (4, 1))
    assert two_way_identification(same, same) == 0.0


def test_correlation_distance():
    x = np.random.default_rng(0).normal(size=(3, 10))
    assert correlation_distance(x, x) == pytest.approx(0.0)
    assert correlation_distance(-x, x) == pytest.approx(2.0)
    with pytest.raises(InvalidInputError, match="same"):
        correlation_distance(x, x[:2])


def test_feature_networks_without_weights_say_what_ran(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    networks = feature_networks(clip_fn=lambda x: x.mean(dim=(2, 3)), clip_source="mean colour")
    sources = {n.key: n.source for n in networks}
    assert set(sources) == {"alexnet2_2way", "alexnet5_2way", "clip_2way"}
    assert sources["alexnet2_2way"].startswith("random init")
    assert sources["clip_2way"] == "mean colour"
    assert feature_networks(random_fallback=False) == []
    with pytest.raises(InvalidInputError, match="expected a file"):
        feature_networks(weights={"alexnet": tmp_path / "missing.pth"})


def test_reconstruction_metrics_and_table(images, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    networks = feature_networks(clip_fn=lambda x: x.flatten(1), clip_source="pixels")
    perfect = reconstruction_metrics(images, images, networks, size=32)
    assert perfect.values["pixcorr"] == pytest.approx(1.0)
    assert perfect.values["ssim"] == pytest.approx(1.0)
    for key in ("alexnet2_2way", "alexnet5_2way", "clip_2way"):
        assert perfect.values[key] == 1.0
    both = compare_methods({"same": images, "shuffled": images.roll(1, 0)}, images, networks, 32)
    assert both["same"].values == perfect.values
    shuffled = both["shuffled"]
    assert shuffled.values["clip_2way"] < 1.0
    assert perfect.networks["clip_2way"] == "pixels"
    table = metric_table(
        {
            "reconstruction": perfect,
            "shuffled": shuffled,
            "mean image": {"pixcorr": 0.1, "ssim": 0.2},
        }
    )
    lines = table.splitlines()
    assert lines[0].startswith("| method | PixCorr ↑ | SSIM ↑ | AlexNet(2) ↑")
    assert lines[2].startswith("| reconstruction | 1.000 | 1.000 | 100.0%")
    assert lines[4].startswith("| mean image | 0.100 | 0.200 | –")
    assert "AlexNet(2): random init" in table
    assert "not available here (no local weights): Inception, EffNet-B, SwAV" in table
    assert perfect.to_dict()["networks"]["clip_2way"] == "pixels"
    assert isinstance(perfect, ImageMetrics)


def test_metrics_reject_mismatched_inputs(images):
    with pytest.raises(InvalidInputError, match="one reconstruction per stimulus"):
        pixcorr(images[:3], images)
    with pytest.raises(InvalidInputError, match=r"\(N, 3, H, W\)"):
        ssim(images[:, :1], images[:, :1])
