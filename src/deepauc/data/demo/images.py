"""Synthetic dermoscopy images: a pigmented lesion on skin, drawn from a latent severity."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

# Separation of the latent severity between benign- and malignant-looking lesions.
SEVERITY_SHIFT = 2.2
# Label noise: P(a malignant lesion looks benign), P(a benign lesion looks malignant).
LOOK_FLIP = (0.08, 0.03)

_SKIN_TONES = np.array(  # RGB
    [[232, 190, 165], [222, 172, 140], [205, 150, 118], [238, 205, 185], [180, 125, 95]],
    dtype=np.float32,
)
_LESION_LIGHT = np.array([175, 120, 85], dtype=np.float32)
_LESION_DARK = np.array([85, 50, 32], dtype=np.float32)
# Variegation colours: black, dark brown, blue-grey, red, regression white.
_PATCH_COLOURS = np.array(
    [[35, 28, 28], [70, 40, 25], [105, 115, 135], [175, 80, 80], [215, 200, 195]],
    dtype=np.float32,
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Band-limited noise: a ``cells``-wide Gaussian grid upsampled bicubically to h x w."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclasses.dataclass(frozen=True)
class Style:
    """Acquisition style shared by a patient or a source: skin tone and camera look."""

    skin: tuple[float, float, float]
    height: int
    width: int
    vignette: float  # probability of a dark circular dermoscope field


def patient_style(rng: np.random.Generator, height: int, width: int, vignette: float) -> Style:
    """Draw a skin tone (a palette colour with jitter) for one patient."""
    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.normal(0, 8, 3)
    red, green, blue = (float(v) for v in tone)
    return Style((red, green, blue), height, width, vignette)


@dataclasses.dataclass
class _Canvas:
    """Pixel coordinates of one image and its illumination field."""

    xx: np.ndarray
    yy: np.ndarray
    light: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.xx.shape[0], self.xx.shape[1]


@dataclasses.dataclass
class _Lesion:
    """Where the lesion is: centre, base radius, rotated coordinate and opacity mask."""

    cx: float
    cy: float
    r0: float
    u: np.ndarray  # coordinate along the lesion's long axis
    alpha: np.ndarray  # 1 inside the lesion, 0 outside, soft at the border


def _skin(rng: np.random.Generator, style: Style) -> tuple[np.ndarray, _Canvas]:
    """Skin tone under uneven illumination, mottled."""
    h, w = style.height, style.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.normal(0, 0.10, 2)
    light = 1.0 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    light += 0.05 * _smooth_noise(rng, h, w, 4)
    skin = np.asarray(style.skin, dtype=np.float32) * rng.uniform(0.94, 1.04)
    img = skin[None, None, :] * light[..., None]
    img += 6.0 * _smooth_noise(rng, h, w, 12)[..., None]
    return img, _Canvas(xx, yy, light)


def _edge_radius(
    rng: np.random.Generator, z: np.ndarray, f_irr: float, f_asym: float
) -> np.ndarray:
    """Relative radius r(theta) = 1 + random harmonics; k = 1 moves mass off-centre."""
    # cos(k*theta + phi) = Re(z^k e^{i phi}) with z = e^{i theta}: powers of z are
    # much cheaper than arctan2 and one cos per harmonic.
    amp = 0.03 + 0.10 * _sigmoid(f_irr - 1.0)
    radius = np.ones(z.shape, dtype=np.float32)
    zk = z.copy()
    for k in range(1, 8):
        if k > 1:
            zk *= z
        coef = 0.6 * amp * _sigmoid(f_asym - 0.5) if k == 1 else rng.normal(0, amp / k**0.6)
        phi = rng.uniform(0, 2 * math.pi)
        radius += coef * (zk.real * math.cos(phi) - zk.imag * math.sin(phi))
    return radius


def _lesion_shape(
    rng: np.random.Generator, canvas: _Canvas, f_size: float, f_irr: float, f_asym: float
) -> _Lesion:
    """Centre, size, elongation and irregular soft border of the lesion."""
    h, w = canvas.shape
    side = min(h, w)
    cx = w / 2 + rng.normal(0, 0.05 * side)
    cy = h / 2 + rng.normal(0, 0.05 * side)
    r0 = float(np.clip(0.19 * side * math.exp(0.17 * f_size), 0.07 * side, 0.42 * side))
    aspect = 1.0 + abs(rng.normal(0, 0.12)) + 0.25 * _sigmoid(f_asym - 1.0)
    rot = rng.uniform(0, math.pi)
    dx, dy = canvas.xx - cx, canvas.yy - cy
    u = (dx * math.cos(rot) + dy * math.sin(rot)) / aspect
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    dist = np.sqrt(u * u + v * v)
    z = ((u + 1j * v) / np.maximum(dist, 1e-6)).astype(np.complex64)
    radius = _edge_radius(rng, z, f_irr, f_asym)
    rough = (0.02 + 0.10 * _sigmoid(f_irr - 1.0)) * _smooth_noise(rng, h, w, 14)
    edge = r0 * (radius + rough)
    softness = 0.04 * r0 * (1.0 + 2.0 * _sigmoid(-f_irr))
    alpha = np.clip((edge - dist) / softness + 0.5, 0.0, 1.0)
    return _Lesion(cx, cy, r0, u, alpha)


def _pigment(
    rng: np.random.Generator, canvas: _Canvas, lesion: _Lesion, f_dark: float, f_asym: float
) -> np.ndarray:
    """Light-to-dark brown, darker towards one side for asymmetric lesions."""
    h, w = canvas.shape
    darkness = _sigmoid(0.8 * f_dark - 0.6 + rng.normal(0, 0.3))
    side_shade = (
        0.25 * _sigmoid(f_asym - 1.0) * (lesion.u / (lesion.r0 + 1e-6)) * rng.choice([-1.0, 1.0])
    )
    dark_map = np.clip(darkness + side_shade + 0.12 * _smooth_noise(rng, h, w, 10), 0.0, 1.0)
    pigment = _LESION_LIGHT + (_LESION_DARK - _LESION_LIGHT) * dark_map[..., None]
    network = 0.07 * _smooth_noise(rng, h, w, 40)  # fine reticular texture
    return pigment * (1.0 + network[..., None])


def _variegate(
    rng: np.random.Generator, canvas: _Canvas, lesion: _Lesion, pigment: np.ndarray, f_col: float
) -> None:
    """Blotches of other colours inside the lesion, painted into ``pigment``."""
    h, w = canvas.shape
    xx, yy, r0 = canvas.xx, canvas.yy, lesion.r0
    n_patches = int(rng.poisson(0.4 + 3.0 * _sigmoid(f_col - 1.2)))
    colour_p = np.array([1.0, 1.5, 0.3 + 2.0 * _sigmoid(f_col - 1.5), 0.4, 0.4])
    colour_p = colour_p / colour_p.sum()
    for _ in range(n_patches):
        ang = rng.uniform(0, 2 * math.pi)
        rad = r0 * math.sqrt(rng.uniform(0.0, 0.5))
        px, py = lesion.cx + rad * math.cos(ang), lesion.cy + rad * math.sin(ang)
        spread = r0 * rng.uniform(0.15, 0.4)
        blob = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * spread * spread))
        blob *= np.clip(0.8 + 0.5 * _smooth_noise(rng, h, w, 8), 0.0, 1.0)
        colour = _PATCH_COLOURS[rng.choice(len(_PATCH_COLOURS), p=colour_p)]
        pigment += (colour - pigment) * (0.85 * blob)[..., None]


def _vignette(rng: np.random.Generator, canvas: _Canvas, img: np.ndarray, chance: float) -> None:
    """Sometimes darken the corners, as a round dermoscope field does."""
    if rng.uniform() < chance:
        h, w = canvas.shape
        rim = np.sqrt((canvas.xx - w / 2) ** 2 + (canvas.yy - h / 2) ** 2) / (
            0.5 * math.hypot(w, h)
        )
        fall = np.clip((rim - rng.uniform(0.72, 0.9)) * 12.0, 0.0, 0.92)
        img *= (1.0 - fall)[..., None]


def _hairs(rng: np.random.Generator, out: np.ndarray) -> None:
    """Dark quadratic Bezier curves drawn over the image."""
    h, w = out.shape[:2]
    for _ in range(int(rng.poisson(1.3))):
        p0, p1, p2 = rng.uniform([0, 0], [w, h], (3, 2))
        t = np.linspace(0.0, 1.0, 24)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        shade = float(rng.uniform(20, 70))
        cv2.polylines(
            out,
            [np.round(curve * 16).astype(np.int32)],
            False,
            (shade, shade * 0.8, shade * 0.7),
            thickness=int(rng.choice([1, 1, 1, 2])),
            lineType=cv2.LINE_AA,
            shift=4,
        )


def render_lesion(rng: np.random.Generator, look_malignant: bool, style: Style) -> np.ndarray:
    """Render one synthetic dermoscopy image (RGB uint8, style.height x style.width).

    ``look_malignant`` shifts the latent severity that drives lesion size, border
    irregularity, asymmetry, darkness and colour variegation.
    """
    s = rng.normal() + SEVERITY_SHIFT * float(look_malignant)
    f_size, f_irr, f_asym, f_dark, f_col = s + rng.normal(0.0, 1.0, 5)
    img, canvas = _skin(rng, style)
    lesion = _lesion_shape(rng, canvas, f_size, f_irr, f_asym)
    pigment = _pigment(rng, canvas, lesion, f_dark, f_asym)
    _variegate(rng, canvas, lesion, pigment, f_col)
    img += (pigment * canvas.light[..., None] - img) * lesion.alpha[..., None]
    img += 3.0 * rng.standard_normal(img.shape, dtype=np.float32)
    _vignette(rng, canvas, img, style.vignette)
    out = np.clip(img, 0, 255).astype(np.uint8)
    _hairs(rng, out)
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of one image, keyed by (seed, set, index).

    Images do not depend on the order they are drawn in, so they can be drawn in
    parallel.
    """
    return np.random.default_rng([seed, stream, index])


def draw_looks(rng: np.random.Generator, targets: np.ndarray) -> np.ndarray:
    """Appearance class after label noise (see LOOK_FLIP)."""
    u = rng.uniform(size=len(targets))
    flip = np.where(targets == 1, u < LOOK_FLIP[0], u < LOOK_FLIP[1])
    return np.where(flip, 1 - targets, targets).astype(bool)
