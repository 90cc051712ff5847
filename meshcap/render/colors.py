"""Colours for uncertainty: a sequential map and its legend.

The map runs from a pale blue-grey (sure) through yellow and orange to dark red (unsure). Its
luminance falls strictly along the way, so the order of two colours reads the same in colour
and in grey; the tests check that.
"""
from __future__ import annotations

import numpy as np

# (position in [0, 1], RGB in [0, 1]); Rec. 709 luminance 0.90, 0.85, 0.61, 0.34, 0.15.
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLORS = np.array([
    [0.86, 0.90, 0.95],
    [0.99, 0.86, 0.40],
    [0.97, 0.55, 0.20],
    [0.85, 0.20, 0.15],
    [0.50, 0.05, 0.10],
])

DEFAULT_SIGMA_MAX = 0.15  # metres: a joint this unsure, or more, is drawn darkest


def uncertainty_to_rgb(sigma, sigma_max: float = DEFAULT_SIGMA_MAX) -> np.ndarray:
    """(..., 3) float RGB in [0, 1] for uncertainties `sigma` (...) in metres; values at or
    above `sigma_max` get the last colour, NaN (unknown) gets it too."""
    if not sigma_max > 0:
        raise ValueError(f"sigma_max must be positive, got {sigma_max}")
    s = np.asarray(sigma, dtype=np.float64) / sigma_max
    s = np.where(np.isfinite(s), np.clip(s, 0.0, 1.0), 1.0)
    return np.stack([np.interp(s, _STOPS, _COLORS[:, c]) for c in range(3)], axis=-1)


def luminance(rgb) -> np.ndarray:
    """(...) Rec. 709 relative luminance of linear RGB (..., 3) in [0, 1]."""
    return np.asarray(rgb) @ np.array([0.2126, 0.7152, 0.0722])


def legend_image(sigma_max: float = DEFAULT_SIGMA_MAX, height: int = 200, width: int = 90) -> np.ndarray:
    """(height, width, 4) uint8 RGBA: a vertical colour bar, sure at the bottom, with ticks in
    centimetres and a title, on a translucent dark panel (paste it onto frames)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGBA", (width, height), (20, 20, 20, 170))
    draw = ImageDraw.Draw(im)
    scale = height / 200.0
    font = ImageFont.load_default(size=max(10, round(11 * scale)))
    top, bottom, left, bar_w = round(22 * scale), height - round(10 * scale), round(8 * scale), round(16 * scale)
    ramp = uncertainty_to_rgb(np.linspace(sigma_max, 0.0, bottom - top), sigma_max)
    bar = (ramp[:, None, :].repeat(bar_w, 1) * 255).astype(np.uint8)
    im.paste(Image.fromarray(bar, "RGB"), (left, top))
    draw.text((left, 5), "sigma (cm)", fill=(255, 255, 255, 255), font=font)
    for frac in (0.0, 0.5, 1.0):
        y = int(round(bottom - 1 - frac * (bottom - top - 1)))
        draw.line([(left + bar_w, y), (left + bar_w + 4 * scale, y)], fill=(255, 255, 255, 255))
        label = f"{frac * sigma_max * 100:.0f}" + ("+" if frac == 1.0 else "")
        draw.text((left + bar_w + 7 * scale, y - 6 * scale), label, fill=(255, 255, 255, 255), font=font)
    return np.asarray(im)


def paste_rgba(image: np.ndarray, overlay: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend `overlay` (h, w, 4) uint8 onto `image` (H, W, 3) uint8 in place at (x, y),
    clipped to the image."""
    H, W = image.shape[:2]
    h, w = overlay.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    o = overlay[y0 - y: y1 - y, x0 - x: x1 - x].astype(np.float32)
    a = o[..., 3:] / 255.0
    dst = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = (dst * (1 - a) + o[..., :3] * a + 0.5).astype(np.uint8)
