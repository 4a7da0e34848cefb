"""A training augmentation that draws dark, thin, curved hairs across a dermoscopy image: each
hair a quadratic Bézier curve between two random points, 1-2 px wide, in a dark hair tone."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


class DrawHair(A.ImageOnlyTransform):
    """Draw 1..``max_hairs`` hairs on a uint8 RGB image (albumentations 2.x transform)."""

    def __init__(self, max_hairs: int = 6, p: float = 0.5) -> None:
        super().__init__(p=p)
        if max_hairs < 1:
            raise ValueError(f"max_hairs must be >= 1, got {max_hairs}")
        self.max_hairs = max_hairs

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        n = int(rng.integers(1, self.max_hairs + 1))
        return {
            "curves": rng.uniform(0.0, 1.0, size=(n, 3, 2)),  # start, bend, end (fractions)
            "widths": rng.integers(1, 3, size=n),
            "tones": rng.integers(10, 60, size=(n, 1)) * np.array([[1.0, 0.85, 0.75]]),
        }

    def apply(self, img: np.ndarray, curves=None, widths=None, tones=None, **params) -> np.ndarray:
        out = img.copy()
        h, w = img.shape[:2]
        t = np.linspace(0.0, 1.0, 40)[:, None]
        for (p0, p1, p2), width, tone in zip(curves, widths, tones):
            pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
            pts = np.round(pts * [w - 1, h - 1]).astype(np.int32).reshape(-1, 1, 2)
            color = tuple(float(c) for c in tone[: img.shape[2] if img.ndim == 3 else 1])
            cv2.polylines(out, [pts], False, color, int(width), lineType=cv2.LINE_AA)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_hairs",)
