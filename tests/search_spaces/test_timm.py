"""timm integration: our names, the oracle's names side by side, and config overrides."""

from __future__ import annotations

import pytest
import timm
import torch

import search_spaces  # noqa: F401  (registers the nas_* names)
from search_spaces import PRESETS, FasterViT
from search_spaces.io import save_weights


def test_our_names_do_not_collide_with_the_oracle():
    pytest.importorskip("fastervit.models.faster_vit")
    ours = set(timm.list_models("nas_faster_vit*"))
    assert {f"nas_faster_vit_{i}_224" for i in range(7)} <= ours and "nas_faster_vit" in ours
    theirs = timm.create_model("faster_vit_0_224")
    assert not isinstance(theirs, FasterViT)
    mine = timm.create_model("nas_faster_vit_0_224")
    assert isinstance(mine, FasterViT) and mine.config == PRESETS["faster_vit_0_224"]
    assert mine.pretrained_cfg["input_size"] == (3, 224, 224)


def test_arbitrary_config_and_overrides(tiny_config, tiny_config_json):
    m = timm.create_model("nas_faster_vit", config=tiny_config_json)
    assert m.config == tiny_config
    m2 = timm.create_model("nas_faster_vit", config=tiny_config.to_dict(), num_classes=4, ct_init_kernel=5)
    assert m2.config == tiny_config.replace(num_classes=4, ct_init_kernel=5)
    assert m2(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(TypeError, match="unknown argument"):
        timm.create_model("nas_faster_vit", config=tiny_config, not_a_knob=3)
    with pytest.raises(ValueError, match=r"num_heads\[2\]=3 must divide"):
        timm.create_model("nas_faster_vit", config=tiny_config, num_heads=(1, 1, 3, 2))


def test_pretrained_file_through_timm(tiny_config, tmp_path):
    src = FasterViT(tiny_config).eval()
    path = save_weights(src, tmp_path / "w.safetensors")
    m = timm.create_model("nas_faster_vit", config=tiny_config, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), src(x))


def test_official_checkpoint_file_through_timm(tmp_path):
    fv = pytest.importorskip("fastervit.models.faster_vit")
    official = fv.faster_vit_0_224().eval()
    path = tmp_path / "fastervit_0_224_1k.pth.tar"
    torch.save({"state_dict": official.state_dict()}, path)
    m = timm.create_model("nas_faster_vit_0_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a, b = official(x), m(x)
    assert ((a - b).abs().max() / a.abs().max()).item() <= 1e-5
