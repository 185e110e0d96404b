"""Shared fixtures: tiny configs that build and run in milliseconds on a CPU."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="torch.meshgrid")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def tiny_config():
    """A HAT model small enough for every CPU test: stage 3 has 2x2 windows with carrier tokens."""
    from search_spaces import FasterViTConfig

    return FasterViTConfig(resolution=64, dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                           window_size=(2, 2, 2, 2), ct_size=1, num_classes=10, drop_path_rate=0.0)


@pytest.fixture
def tiny_config_json(tiny_config, tmp_path):
    return str(tiny_config.save(tmp_path / "tiny.json"))
