"""Random convolutions (Xu, Liu, Yang, Raffel & Niethammer, ICLR 2021), as an albumentations transform.

Scanners differ less in what tissue looks like at the scale of a lesion than in its local texture:
speckle size, edge enhancement, spatial compounding. A model trained on one scanner learns that
texture, and the single-source segmenters flag another scanner's normal tissue (segmenter card, rules
47 to 65). Convolving a training scan with a kernel drawn at random keeps its shapes and changes its
local texture; mixed with the scan by a random weight, every batch sees textures no scanner in the
training data makes.

Two changes for ultrasound. The convolved field is brought back to the field's own mean and standard
deviation, so the transform changes texture, not gain (the scanner-shift augmentation already varies
gain and gamma). And a kernel whose weights sum below zero is negated: its output would otherwise
invert the grey levels — anechoic cysts turned bright — which no scanner does (the serving pipeline
refuses inverted scans).
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from scipy.ndimage import convolve


def _standardised_like(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` shifted and scaled to the mean and standard deviation of `reference`."""
    return (values - values.mean()) / (values.std() + 1e-6) * reference.std() + reference.mean()


class RandomConvolution(A.ImageOnlyTransform):
    """Convolve a framed greyscale scan (H, W, 3, channels equal, uint8; black padding around the field)
    with a random `k` x `k` kernel, `k` drawn from `kernel_sizes`, weights normal with standard deviation
    1 / k (He initialisation of one input channel), then mix: alpha * scan + (1 - alpha) * convolved,
    alpha uniform in `mix`, both at the field's mean and standard deviation (mixing two textures would
    lower the contrast). Only the field's rectangle changes; the padding stays black."""

    def __init__(self, kernel_sizes: tuple[int, ...] = (3, 5, 7), mix: tuple[float, float] = (0.0, 1.0),
                 p: float = 0.5):
        super().__init__(p=p)
        self.kernel_sizes, self.mix = kernel_sizes, mix

    def get_params(self) -> dict[str, Any]:
        size = self.py_random.choice(self.kernel_sizes)
        kernel = self.random_generator.normal(0.0, 1.0 / size, (size, size)).astype(np.float32)
        return {"kernel": kernel if kernel.sum() >= 0 else -kernel, "alpha": self.py_random.uniform(*self.mix)}

    def apply(self, img: np.ndarray, kernel: np.ndarray, alpha: float, **params: Any) -> np.ndarray:
        rows, cols = np.flatnonzero(img[..., 0].any(axis=1)), np.flatnonzero(img[..., 0].any(axis=0))
        if rows.size == 0:
            return img
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        field = img[box][..., 0].astype(np.float32)
        convolved = _standardised_like(convolve(field, kernel, mode="reflect"), field)
        out = img.copy()
        mixed = _standardised_like(alpha * field + (1 - alpha) * convolved, field)
        out[box] = np.clip(mixed, 0, 255).astype(np.uint8)[..., None]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kernel_sizes", "mix")
