"""On-device augmentation: translation within the pad, flips, determinism, refusals."""

from __future__ import annotations

import pytest
import torch

from evaluators.augment import Augment, random_crop_flip


def _dot_images(n: int) -> torch.Tensor:
    x = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    x[:, 0, 8, 4] = 255  # one bright pixel at (8, 4)
    return x


def test_translation_moves_content_at_most_pad_pixels():
    x = _dot_images(64)
    out = random_crop_flip(x, pad=2, flip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    where = [torch.nonzero(o[0])[0].tolist() for o in out]
    assert all(abs(r - 8) <= 2 and abs(c - 4) <= 2 for r, c in where)
    assert len({tuple(w) for w in where}) > 5  # shifts differ per image


def test_flip_mirrors_about_half_the_images():
    x = _dot_images(400)
    out = random_crop_flip(x, pad=0, flip=True, generator=torch.Generator().manual_seed(0))
    mirrored = (out[:, 0, 8, 11] == 255).float().mean()  # column 4 mirrored in a width of 16 -> 11
    assert 0.4 < mirrored < 0.6 and ((out[:, 0, 8, 4] == 255) | (out[:, 0, 8, 11] == 255)).all()


def test_same_seed_same_batch():
    x = torch.randint(0, 255, (8, 1, 12, 12), dtype=torch.uint8)
    a = Augment(crop=0.25, flip=True)(x, torch.Generator().manual_seed(3))
    b = Augment(crop=0.25, flip=True)(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_batch_loader_augments_only_when_asked():
    from evaluators.data import BatchLoader, ImageData

    data = ImageData(_dot_images(32), torch.zeros(32, dtype=torch.int64), ("a",), "dots", "train")
    plain = next(iter(BatchLoader(data, batch_size=32, resolution=16, device="cpu", shuffle=False)))[0]
    aug = next(iter(BatchLoader(data, batch_size=32, resolution=16, device="cpu", shuffle=False,
                                augment=Augment(crop=0.125))))[0]
    assert torch.equal(plain, plain[:1].expand_as(plain))  # every plain image is the same
    assert not torch.equal(aug, aug[:1].expand_as(aug))


@pytest.mark.parametrize("kwargs, match", [(dict(crop=0.5), "crop=0.5"), (dict(crop=-0.1), "crop=-0.1"),
                                           (dict(flip=1), "flip=1")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augment(**kwargs)
