"""The image tower of sim-clip: a small VGG-style convnet, registered as a timm model.

open_clip builds image towers from timm by name (``"timm_model_name"`` in a model config), so the
sim-clip configs in ``neurodecode/embedded/model_configs/`` name ``sim_convnet_64`` (64 px) and
``sim_convnet_32`` (32 px), registered here on import. On this world's small procedural scenes a
plain convnet (3x3 conv + BatchNorm + ReLU + 2x2 max-pool per stage, full resolution in the first
stage) learns object categories several times faster than a ViT or open_clip's ResNet (whose
stride-4 stems erase 5-10 px objects).

The head flattens the final 4 x 4 map (so that the embedding keeps where things are, which the
captions name) and projects it linearly to ``num_classes`` (open_clip's ``embed_dim``).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


class SimConvNet(nn.Module):
    """Conv stages then a flatten + linear head.

    Parameters
    ----------
    widths : tuple of int
        Channels of each stage; each stage halves the resolution.
    image_size : int
        Input side S in pixels; ``S / 2 ** len(widths)`` must be 4.
    num_classes : int
        Output dimension D (``0``: return the flattened final map).
    """

    def __init__(self, widths: tuple[int, ...], image_size: int, num_classes: int = 0) -> None:
        super().__init__()
        if image_size // 2 ** len(widths) != 4:
            raise ValueError(f"image_size {image_size} / 2**{len(widths)} stages must be 4.")
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.num_features = channels * 16
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.default_cfg = {"input_size": (3, image_size, image_size), "pool_size": None}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> final map (N, C, 4, 4)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D)."""
        return self.head(self.forward_features(x).flatten(1))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


def _build(widths, image_size, pretrained=False, num_classes=0, global_pool=None, **kwargs):
    if pretrained:
        raise ValueError("sim_convnet has no pretrained weights; sim-clip trains it.")
    return SimConvNet(widths, image_size, num_classes=num_classes)


@register_model
def sim_convnet_64(pretrained: bool = False, **kwargs) -> SimConvNet:
    """sim-clip default image tower: 64 px, stages 16-32-64-128."""
    return _build((16, 32, 64, 128), 64, pretrained, **kwargs)


@register_model
def sim_convnet_32(pretrained: bool = False, **kwargs) -> SimConvNet:
    """sim-clip tiny image tower: 32 px, stages 16-32-64."""
    return _build((16, 32, 64), 32, pretrained, **kwargs)
