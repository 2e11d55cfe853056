"""MindEye's reconstruction metric table: PixCorr, SSIM and feature-based 2-way identification.

This module owns the image-level metrics every reconstruction is scored with, following MindEye
(Scotti et al., 2023) exactly where the protocol is stated:

- **PixCorr**: Pearson r between the flattened pixels of a reconstruction and its stimulus, both
  resized (bilinear) to a common size (425 px in MindEye), averaged over images.
- **SSIM**: on grayscale images (``0.2125 R + 0.7154 G + 0.0721 B``, skimage's ``rgb2gray``) at the
  common size, Gaussian weights with sigma 1.5 (window truncated at 3.5 sigma, 11 px), population
  covariances, data range 1, ``C1 = 0.01**2``, ``C2 = 0.03**2``, the SSIM map cropped by the window
  radius and averaged (skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``).
- **2-way identification** on a network's features: for each reconstruction, the fraction of the
  other N-1 stimuli whose feature correlation with the reconstruction is lower than that of its own
  stimulus; averaged over reconstructions (chance 0.5).
- **Distance** metrics (EffNet-B1, SwAV): mean correlation distance ``1 - r`` between the features
  of each reconstruction and its stimulus (lower is better).

Feature networks (AlexNet ``features.4``/``features.11``, InceptionV3 ``avgpool``, CLIP's final
embedding, EfficientNet-B1 and SwAV-ResNet50 ``avgpool``) are torchvision definitions whose weights
are read only from local files (a path given, or torch hub's checkpoint folder). Without weights a
network is left out — or, for AlexNet with ``random_fallback=True``, run with seeded random weights
and labelled ``"random init"`` — and the caller can pass its own CLIP-like image encoder (the
sim-clip encoder in the simulated world). Every result records which networks were used and where
their weights came from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.validation import InvalidInputError

log = logging.getLogger(__name__)

ImageArray = np.ndarray | torch.Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)

#: metric key -> (column label, higher is better)
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "pixcorr": ("PixCorr", True),
    "ssim": ("SSIM", True),
    "alexnet2_2way": ("AlexNet(2)", True),
    "alexnet5_2way": ("AlexNet(5)", True),
    "inception_2way": ("Inception", True),
    "clip_2way": ("CLIP", True),
    "effnet_distance": ("EffNet-B", False),
    "swav_distance": ("SwAV", False),
    "image_retrieval": ("Image retrieval", True),
    "brain_retrieval": ("Brain retrieval", True),
}

#: torchvision weight files, as torch hub names them in its checkpoint folder
TORCHVISION_WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "alexnet": ("alexnet-owt-7be5be79.pth",),
    "inception": ("inception_v3_google-0cc3c7bd.pth",),
    "effnet": ("efficientnet_b1-c27df63c.pth", "efficientnet_b1_rwightman-bac287d4.pth"),
    "swav": ("swav_800ep_pretrain.pth.tar",),
}


def as_image_tensor(images: ImageArray, name: str = "images") -> torch.Tensor:
    """Images as float64 ``(N, 3, H, W)`` in ``[0, 1]``.

    Accepts uint8 ``(N, H, W, 3)`` arrays (as stimuli are stored) or float ``(N, 3, H, W)``
    tensors/arrays in ``[0, 1]`` (as generators return them).
    """
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InvalidInputError(
                f"{name} has shape {images.shape}; expected (N, H, W, 3) uint8."
            )
        return torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
    tensor = torch.as_tensor(images).detach().cpu().double()
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise InvalidInputError(
            f"{name} has shape {tuple(tensor.shape)}; expected (N, 3, H, W) floats in [0, 1] "
            "or (N, H, W, 3) uint8."
        )
    if not torch.isfinite(tensor).all():
        raise InvalidInputError(f"{name} has NaN/inf values; expected finite values in [0, 1].")
    return tensor


def _check_pair(recons: ImageArray, stimuli: ImageArray) -> tuple[torch.Tensor, torch.Tensor]:
    recons, stimuli = as_image_tensor(recons, "recons"), as_image_tensor(stimuli, "stimuli")
    if len(recons) != len(stimuli):
        raise InvalidInputError(
            f"recons has {len(recons)} images but stimuli has {len(stimuli)}; expected one "
            "reconstruction per stimulus, in the same order."
        )
    if len(recons) == 0:
        raise InvalidInputError("recons is empty; expected at least one image.")
    return recons, stimuli


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    shrinking = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )


def pixcorr_per_image(
    recons: ImageArray, stimuli: ImageArray, size: int | None = 425, batch_size: int = 64
) -> np.ndarray:
    """Pearson r between each reconstruction's and its stimulus's pixels at ``size x size``.

    Parameters
    ----------
    recons, stimuli : (N, 3, H, W) floats in [0, 1] or (N, H, W, 3) uint8
        Reconstructions and stimuli in the same order (sizes may differ).
    size : int or None
        Common side (px) both are resized to (bilinear); ``None`` keeps them (sizes must match).

    Returns
    -------
    ndarray, shape (N,)
    """
    recons, stimuli = _check_pair(recons, stimuli)
    out = []
    for start in range(0, len(recons), batch_size):
        a = _resize(recons[start : start + batch_size], size).flatten(1)
        b = _resize(stimuli[start : start + batch_size], size).flatten(1)
        if a.shape != b.shape:
            raise InvalidInputError(
                f"recons and stimuli differ in size ({a.shape[1]} vs {b.shape[1]} values per "
                "image); pass size= to compare them at a common size."
            )
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        denom = a.norm(dim=1) * b.norm(dim=1)
        out.append(torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), 0.0))
    return torch.cat(out).numpy()


def pixcorr(recons: ImageArray, stimuli: ImageArray, size: int | None = 425) -> float:
    """Mean PixCorr over images (see :func:`pixcorr_per_image`)."""
    return float(pixcorr_per_image(recons, stimuli, size).mean())


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """Luminance ``(N, 3, H, W) -> (N, H, W)`` with skimage's ``rgb2gray`` weights."""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("nchw,c->nhw", images, weights)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (scipy's rule), float64."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (x / sigma) ** 2)
    return window / window.sum()


def ssim_per_image(
    recons: ImageArray,
    stimuli: ImageArray,
    size: int | None = 425,
    sigma: float = 1.5,
    batch_size: int = 64,
) -> np.ndarray:
    """Grayscale SSIM of each reconstruction against its stimulus, at ``size x size``.

    Gaussian-weighted local statistics (``sigma`` px, truncated at 3.5 sigma), population
    covariances, data range 1; the SSIM map is averaged over the pixels whose window lies inside
    the image (skimage's cropping).

    Parameters
    ----------
    recons, stimuli : (N, 3, H, W) floats in [0, 1] or (N, H, W, 3) uint8
    size : int or None
        Common side (px); ``None`` keeps the input size.
    sigma : float
        Gaussian window width (px).

    Returns
    -------
    ndarray, shape (N,)
    """
    recons, stimuli = _check_pair(recons, stimuli)
    window = gaussian_window(sigma)
    radius = (len(window) - 1) // 2
    c1, c2 = 0.01**2, 0.03**2
    kernel_h, kernel_w = window.view(1, 1, -1, 1), window.view(1, 1, 1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kernel_h), kernel_w)

    out = []
    for start in range(0, len(recons), batch_size):
        x = rgb_to_gray(_resize(recons[start : start + batch_size], size))[:, None]
        y = rgb_to_gray(_resize(stimuli[start : start + batch_size], size))[:, None]
        if x.shape != y.shape:
            raise InvalidInputError(
                f"recons and stimuli differ in size ({tuple(x.shape[-2:])} vs "
                f"{tuple(y.shape[-2:])}); pass size= to compare them at a common size."
            )
        if min(x.shape[-2:]) <= 2 * radius:
            raise InvalidInputError(
                f"images of {tuple(x.shape[-2:])} px are too small for SSIM with sigma={sigma}; "
                f"expected sides > {2 * radius}."
            )
        ux, uy = blur(x), blur(y)
        vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
        ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        out.append(ssim_map.flatten(1).mean(1))
    return torch.cat(out).numpy()


def ssim(recons: ImageArray, stimuli: ImageArray, size: int | None = 425) -> float:
    """Mean grayscale SSIM over images (see :func:`ssim_per_image`)."""
    return float(ssim_per_image(recons, stimuli, size).mean())


def _check_features(recon_features, stimulus_features) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(torch.as_tensor(recon_features).detach().cpu(), dtype=np.float64)
    b = np.asarray(torch.as_tensor(stimulus_features).detach().cpu(), dtype=np.float64)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if a.shape != b.shape:
        raise InvalidInputError(
            f"recon_features has shape {a.shape} but stimulus_features has {b.shape}; expected "
            "the same (N, F)."
        )
    return a, b


def _standardise_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def two_way_identification_per_image(recon_features, stimulus_features) -> np.ndarray:
    """Per reconstruction: fraction of other stimuli less correlated with it than its own.

    Parameters
    ----------
    recon_features, stimulus_features : array, shape (N, ...)
        Features of reconstructions and of their stimuli, same order (flattened per image).

    Returns
    -------
    ndarray, shape (N,)
        ``#{i != j : r(stim_i, recon_j) < r(stim_j, recon_j)} / (N - 1)`` for each ``j``.
    """
    recon, stim = _check_features(recon_features, stimulus_features)
    if len(recon) < 2:
        raise InvalidInputError("2-way identification needs at least 2 images.")
    r = _standardise_rows(stim) @ _standardise_rows(recon).T  # r[i, j] = corr(stim_i, recon_j)
    own = np.diag(r)
    return (r < own[None, :]).sum(0) / (len(r) - 1)


def two_way_identification(recon_features, stimulus_features) -> float:
    """Mean 2-way identification accuracy (chance 0.5); see the per-image version."""
    return float(two_way_identification_per_image(recon_features, stimulus_features).mean())


def correlation_distance(recon_features, stimulus_features) -> float:
    """Mean correlation distance ``1 - r`` between each reconstruction's and stimulus's features."""
    recon, stim = _check_features(recon_features, stimulus_features)
    r = (_standardise_rows(recon) * _standardise_rows(stim)).sum(1)
    return float((1.0 - r).mean())


@dataclass
class FeatureNetwork:
    """One feature metric: a network, the layer it reads and how its features are scored.

    Attributes
    ----------
    key : str
        Metric key, e.g. ``"alexnet2_2way"`` (see :data:`METRIC_LABELS`).
    extract : callable
        ``images (N, 3, H, W) float in [0, 1] -> features (N, ...)``; resizes and normalises itself.
    kind : {"two_way", "distance"}
    source : str
        Where the weights came from (a file, ``"random init"``, ``"caller"``).
    """

    key: str
    extract: Callable[[torch.Tensor], torch.Tensor]
    kind: str
    source: str

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.key, (self.key, True))[0]


def _preprocess(size: int, mean: Sequence[float], std: Sequence[float], mode: str = "bilinear"):
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def run(images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if tuple(x.shape[-2:]) != (size, size):
            antialias = x.shape[-1] > size
            x = F.interpolate(
                x,
                size=(size, size),
                mode=mode,
                align_corners=False,
                antialias=antialias and mode in ("bilinear", "bicubic"),
            )
        return (x - mean_t.to(x.device)) / std_t.to(x.device)

    return run


def _layer_extractor(model: nn.Module, node: str, preprocess, device) -> Callable:
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(model.eval(), return_nodes={node: "out"}).to(device)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        return extractor(preprocess(images.to(device)))["out"].flatten(1).cpu()

    return extract


def _module_extractor(module: nn.Module, preprocess, device) -> Callable:
    module = module.eval().to(device)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        return module(preprocess(images.to(device))).flatten(1).cpu()

    return extract


def _alexnet_features(path: Path | None) -> nn.Sequential:
    """AlexNet's convolutional ``features`` (the classifier is never built): weights or seeded."""
    import torchvision.models as tvm

    with torch.device("meta"):
        model = tvm.alexnet(weights=None)
    features = model.features.to_empty(device="cpu")
    if path is not None:
        state = _load_state(path)
        features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        )
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for layer in features:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
    return features


def _find_weights(name: str, weights: Mapping[str, str | Path] | None) -> Path | None:
    if weights and name in weights:
        path = Path(weights[name]).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"weights for {name!r} not found: expected a file at {path}.")
        return path
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for filename in TORCHVISION_WEIGHT_FILES.get(name, ()):
        if (checkpoints / filename).is_file():
            return checkpoints / filename
    return None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def feature_networks(
    clip_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    clip_source: str = "caller",
    weights: Mapping[str, str | Path] | None = None,
    random_fallback: bool = True,
    device: str | torch.device = "cpu",
) -> list[FeatureNetwork]:
    """The MindEye feature networks that can run here, with where their weights came from.

    Parameters
    ----------
    clip_fn : callable, optional
        CLIP-like image encoder ``images (N, 3, H, W) in [0, 1] -> (N, D)`` (e.g. OpenCLIP ViT-L/14
        or the sim-clip encoder); gives the ``clip_2way`` metric.
    clip_source : str
        What ``clip_fn`` is, for the report (e.g. ``"sim-clip"``).
    weights : mapping, optional
        Local weight files by network: ``"alexnet"``, ``"inception"``, ``"effnet"``, ``"swav"``.
        Networks not named are looked for in torch hub's checkpoint folder under torchvision's
        file names; nothing is downloaded.
    random_fallback : bool
        Without AlexNet weights, run AlexNet with seeded random weights (labelled ``"random
        init"``) rather than leave its two metrics out.
    device : str or torch.device
        Where the networks run.

    Returns
    -------
    list of FeatureNetwork
    """
    import torchvision.models as tvm

    networks: list[FeatureNetwork] = []
    imagenet = (IMAGENET_MEAN, IMAGENET_STD)
    path = _find_weights("alexnet", weights)
    if path is not None or random_fallback:
        features = _alexnet_features(path)
        source = (
            f"torchvision weights {path}"
            if path is not None
            else "random init (no local weights; seed 0)"
        )
        for index, key in ((4, "alexnet2_2way"), (11, "alexnet5_2way")):
            extract = _module_extractor(features[: index + 1], _preprocess(256, *imagenet), device)
            networks.append(FeatureNetwork(key, extract, "two_way", source))
    path = _find_weights("inception", weights)
    if path is not None:
        inception = tvm.inception_v3(weights=None, aux_logits=True, init_weights=False)
        inception.load_state_dict(_load_state(path))
        extract = _layer_extractor(inception, "avgpool", _preprocess(342, *imagenet), device)
        networks.append(FeatureNetwork("inception_2way", extract, "two_way", str(path)))
    if clip_fn is not None:

        @torch.no_grad()
        def clip_extract(images: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(clip_fn(images.float())).flatten(1).float().cpu()

        networks.append(FeatureNetwork("clip_2way", clip_extract, "two_way", clip_source))
    path = _find_weights("effnet", weights)
    if path is not None:
        effnet = tvm.efficientnet_b1(weights=None)
        effnet.load_state_dict(_load_state(path))
        extract = _layer_extractor(effnet, "avgpool", _preprocess(255, *imagenet), device)
        networks.append(FeatureNetwork("effnet_distance", extract, "distance", str(path)))
    path = _find_weights("swav", weights)
    if path is not None:
        swav = tvm.resnet50(weights=None)
        missing, _ = swav.load_state_dict(_load_state(path), strict=False)
        if any(not k.startswith("fc.") for k in missing):
            raise InvalidInputError(
                f"{path} is not a SwAV ResNet-50 checkpoint: missing {missing}."
            )
        extract = _layer_extractor(swav, "avgpool", _preprocess(224, *imagenet), device)
        networks.append(FeatureNetwork("swav_distance", extract, "distance", str(path)))
    return networks


@dataclass
class ImageMetrics:
    """Metric values and the feature networks they were computed with.

    Attributes
    ----------
    values : dict of str -> float
        ``pixcorr``, ``ssim`` and one entry per feature network (keys of :data:`METRIC_LABELS`).
    networks : dict of str -> str
        Metric key -> where that network's weights came from.
    """

    values: dict[str, float]
    networks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: ``{**values, "networks": networks}``."""
        return {**self.values, "networks": dict(self.networks)}


def _features(network: FeatureNetwork, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [
            network.extract(images[s : s + batch_size].float())
            for s in range(0, len(images), batch_size)
        ]
    )


def reconstruction_metrics(
    recons: ImageArray,
    stimuli: ImageArray,
    networks: Sequence[FeatureNetwork] | None = None,
    size: int | None = 425,
    batch_size: int = 32,
) -> ImageMetrics:
    """Score reconstructions against their stimuli with MindEye's metrics.

    Parameters
    ----------
    recons, stimuli : (N, 3, H, W) floats in [0, 1] or (N, H, W, 3) uint8
        Same order; N >= 2.
    networks : list of FeatureNetwork, optional
        Default :func:`feature_networks` (what exists locally; random-init AlexNet otherwise).
    size : int or None
        Common side for PixCorr and SSIM (px).
    batch_size : int
        Images per network call.

    Returns
    -------
    ImageMetrics
    """
    return compare_methods({"recons": recons}, stimuli, networks, size, batch_size)["recons"]


def compare_methods(
    methods: Mapping[str, ImageArray],
    stimuli: ImageArray,
    networks: Sequence[FeatureNetwork] | None = None,
    size: int | None = 425,
    batch_size: int = 32,
) -> dict[str, ImageMetrics]:
    """Score several sets of reconstructions (a method and its controls) against the same stimuli.

    The stimuli's network features are computed once. Arguments as
    :func:`reconstruction_metrics`; ``methods`` maps a name (e.g. ``"reconstruction"``,
    ``"shuffled trials"``, ``"mean image"``) to that method's images, in stimulus order.

    Returns
    -------
    dict of str -> ImageMetrics
        In the order of ``methods``; pass it to :func:`metric_table`.
    """
    if not methods:
        raise InvalidInputError("methods is empty; expected at least one set of reconstructions.")
    stimuli_t = as_image_tensor(stimuli, "stimuli")
    if networks is None:
        networks = feature_networks()
    stimulus_features = {n.key: _features(n, stimuli_t, batch_size) for n in networks}
    results = {}
    for name, recons in methods.items():
        recons_t, _ = _check_pair(recons, stimuli_t)
        values = {
            "pixcorr": pixcorr(recons_t, stimuli_t, size),
            "ssim": ssim(recons_t, stimuli_t, size),
        }
        used = {}
        for network in networks:
            features = _features(network, recons_t, batch_size)
            if network.kind == "two_way":
                values[network.key] = two_way_identification(
                    features, stimulus_features[network.key]
                )
            else:
                values[network.key] = correlation_distance(features, stimulus_features[network.key])
            used[network.key] = network.source
        results[name] = ImageMetrics(values, used)
    return results


def _format(key: str, value: float) -> str:
    if not np.isfinite(value):
        return "–"
    if key.endswith("_2way") or key.endswith("retrieval"):
        return f"{100 * value:.1f}%"
    return f"{value:.3f}"


def metric_table(rows: Mapping[str, ImageMetrics | Mapping[str, float]]) -> str:
    """A markdown table of metrics, one row per method, MindEye's column order.

    Parameters
    ----------
    rows : mapping of str -> ImageMetrics or dict of str -> float
        Method name (e.g. ``"reconstruction"``, ``"shuffled trials"``, ``"mean image"``) -> metrics.

    Returns
    -------
    str
        Table followed by one line per feature network saying which weights were used.
    """
    if not rows:
        raise InvalidInputError("rows is empty; expected at least one method's metrics.")
    values = {
        name: m.values if isinstance(m, ImageMetrics) else dict(m) for name, m in rows.items()
    }
    keys = [k for k in METRIC_LABELS if any(k in v for v in values.values())]
    keys += sorted({k for v in values.values() for k in v} - set(keys))
    header = ["method"] + [
        f"{METRIC_LABELS.get(k, (k, True))[0]} {'↑' if METRIC_LABELS.get(k, (k, True))[1] else '↓'}"
        for k in keys
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, v in values.items():
        cells = [_format(k, float(v[k])) if k in v else "–" for k in keys]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    sources: dict[str, str] = {}
    for m in rows.values():
        if isinstance(m, ImageMetrics):
            sources.update(m.networks)
    if sources:
        lines.append("")
        lines.append("Feature networks used:")
        for key, source in sources.items():
            lines.append(f"- {METRIC_LABELS.get(key, (key, True))[0]}: {source}")
    missing = [
        METRIC_LABELS[k][0]
        for k in METRIC_LABELS
        if k.endswith(("_2way", "_distance")) and k not in sources
    ]
    if missing and sources:
        lines.append(f"- not available here (no local weights): {', '.join(missing)}")
    return "\n".join(lines)
