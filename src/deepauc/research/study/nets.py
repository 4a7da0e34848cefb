"""The study's networks: a small ELU CNN, the paper's ResNet20 with ELU and an ELU MLP, each
with a one-logit ``head`` behind timm's classifier protocol."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepauc.research.heads import TimmClassifier, first_head
from deepauc.research.study.config import DatasetSpec

__all__ = ["ELUCNN", "ELUMLP", "ResNet20ELU", "build_model", "model_title"]


class ELUCNN(TimmClassifier, nn.Module):
    """A small CNN: ``depth`` conv-BN-ELU stages (the later ones stride 2), global average
    pooling and a one-logit linear ``head``."""

    def __init__(self, in_ch: int = 1, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv2d(ch, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ELU(inplace=True),
            ]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.elu(self.bn1(self.conv1(x)))))
        if self.pad is None:
            short = x
        else:  # option A of the CIFAR ResNets: subsample and zero-pad the channels
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.elu(out + short)


class ResNet20ELU(TimmClassifier, nn.Module):
    """The CIFAR ResNet20 (3 stages × 3 basic blocks, 16/32/64 channels) with ELU, as in
    the paper's benchmarks, with a one-logit linear ``head``."""

    def __init__(self, in_ch: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ELU(inplace=True)
        )
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


class ELUMLP(TimmClassifier, nn.Module):
    """One hidden ELU layer over the flattened image, a one-logit linear ``head``."""

    def __init__(self, in_features: int, width: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, width), nn.ELU(inplace=True)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def build_model(
    spec: DatasetSpec, shape: tuple[int, ...], head_init: str = "torch_default"
) -> ELUCNN | ResNet20ELU | ELUMLP:
    """The data set's network for images of shape ``(C, H, W)``, its head drawn as
    ``head_init`` says (:func:`deepauc.research.heads.first_head`)."""
    model: ELUCNN | ResNet20ELU | ELUMLP
    if spec.model == "resnet20":
        model = ResNet20ELU(shape[0])
    elif spec.model == "mlp":
        model = ELUMLP(int(np.prod(shape)), spec.width)
    else:
        model = ELUCNN(shape[0], spec.width, spec.depth)
    first_head(model, head_init)
    return model


def model_title(spec: DatasetSpec) -> str:
    """The network's name in the report, e.g. ``CNN3-16``."""
    if spec.model == "mlp":
        return f"MLP-{spec.width}"
    return "ResNet20-ELU" if spec.model == "resnet20" else f"CNN{spec.depth}-{spec.width}"
