"""Batch augmentation on the device: random translation (pad + crop) and horizontal flip.

Runs on uint8 batches before resizing/normalisation (``evaluators.data.BatchLoader``), so padding
is the images' own black background and the whole batch costs two small kernels on the GPU. All
randomness comes from a ``torch.Generator`` on the batch's device, seeded by the loader: the same
seed gives the same augmented epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augment", "random_crop_flip"]


@dataclass(frozen=True)
class Augment:
    """Label-preserving augmentation of a dataset's images.

    Args:
        crop: translate each image by up to ``crop`` x its side (pad with zeros, crop back), e.g.
            0.0625 = 4 px at 64 px; 0 turns it off.
        flip: mirror half of the images left-right.
    """

    crop: float = 0.0
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.crop, bool) or not isinstance(self.crop, (int, float)) or not 0.0 <= self.crop < 0.5:
            raise ValueError(f"augment crop={self.crop!r} must be a fraction of the image side in [0, 0.5)")
        if not isinstance(self.flip, bool):
            raise ValueError(f"augment flip={self.flip!r} must be true or false")

    @property
    def active(self) -> bool:
        return self.crop > 0 or self.flip

    def pad_pixels(self, side: int) -> int:
        return int(round(self.crop * side))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pad = self.pad_pixels(min(images.shape[-2:]))
        return random_crop_flip(images, pad=pad, flip=self.flip, generator=generator)


def random_crop_flip(images: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by a random (dy, dx) in [-pad, pad]² (zeros shifted in) and, with
    ``flip``, mirrored with probability 1/2. Shape and dtype are kept; ``generator`` must live on
    the images' device."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad={pad} must be >= 0")
    b, _, h, w = images.shape
    dev = images.device
    out = images
    if pad > 0:
        padded = F.pad(out, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
        batch = torch.arange(b, device=dev)[:, None, None, None]
        chans = torch.arange(images.shape[1], device=dev)[None, :, None, None]
        out = padded[batch, chans, rows, cols]
    if flip:
        mirror = torch.rand(b, device=dev, generator=generator) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out
