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


def test_explicit_entrypoints_and_default_cfgs():
    from search_spaces.timm_models import TIMM_NAMES

    assert {f"nas_{p}" for p in PRESETS} | {"nas_faster_vit"} == set(TIMM_NAMES)
    assert all(timm.models.is_model(n) for n in TIMM_NAMES)
    assert set(timm.list_pretrained("nas_faster_vit_*")) == {f"nas_faster_vit_{i}_224.in1k" for i in range(7)}
    cfg = timm.models.get_pretrained_cfg("nas_faster_vit_0_224")
    assert cfg.url.endswith("fastervit_0_224_1k.pth.tar") and cfg.crop_pct == 0.875 and cfg.tag == "in1k"
    with torch.device("meta"):  # 365M parameters: no memory, no init
        m = timm.create_model("nas_faster_vit_4_21k_384")
    assert m.pretrained_cfg["input_size"] == (3, 384, 384) and m.config == PRESETS["faster_vit_4_21k_384"]
    doc = timm.models.model_entrypoint("nas_faster_vit_2_224").__doc__
    assert "FasterViT-2" in doc


def test_features_only_follows_feature_info(tiny_config):
    model = timm.create_model("nas_faster_vit", config=tiny_config)
    info = model.feature_info
    feats = timm.create_model("nas_faster_vit", config=tiny_config, features_only=True)
    outs = feats(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [i["num_chs"] for i in info] == feats.feature_info.channels()
    assert [64 // o.shape[-1] for o in outs] == [i["reduction"] for i in info]
    picked = timm.create_model("nas_faster_vit", config=tiny_config, features_only=True, out_indices=(1, 3))
    assert [o.shape[1] for o in picked(torch.randn(1, 3, 64, 64))] == [info[1]["num_chs"], info[3]["num_chs"]]


def test_no_weight_decay_and_group_matcher_work_with_timm_optimisers(tiny_config):
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    model = timm.create_model("nas_faster_vit", config=tiny_config.replace(layer_scale=1e-5, ct_gate=True))
    names = dict(model.named_parameters())
    skip = model.no_weight_decay()
    assert skip <= set(names)
    assert any(".gamma_attn" in n for n in skip) and any(".rel_pos.mlp." in n for n in skip)
    assert any(".gate." in n for n in skip) and not any(n.endswith("qkv.weight") for n in skip)
    groups = param_groups_weight_decay(model, weight_decay=0.05, no_weight_decay_list=skip)
    no_decay = {id(p) for p in groups[0]["params"]}
    assert all(id(names[n]) in no_decay for n in skip)
    for coarse in (False, True):
        grouped = group_parameters(model, model.group_matcher(coarse=coarse))
        flat = [n for g in grouped.values() for n in g]
        assert sorted(flat) == sorted(names)  # every parameter in exactly one group
        first = next(iter(grouped.values()))
        assert all(n.startswith("stem.") for n in first)
    fine = group_parameters(model, model.group_matcher())
    assert len(fine) > len(group_parameters(model, model.group_matcher(coarse=True)))
    assert param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=skip, layer_decay=0.8)


def test_reset_classifier_keeps_config_in_step(tiny_config):
    model = timm.create_model("nas_faster_vit", config=tiny_config)
    model.reset_classifier(3)
    assert model.config.num_classes == model.num_classes == 3 and model.config.arch_id == tiny_config.arch_id
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    model.reset_classifier(0)
    assert model.config.num_classes == 0 and model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)
    with pytest.raises(ValueError, match="global_pool='max'"):
        model.reset_classifier(5, global_pool="max")


def test_new_knobs_through_timm(tiny_config):
    m = timm.create_model("nas_faster_vit", config=tiny_config, attention="edgevit", hat=[False] * 4, stem="hybrid")
    assert m.config.attention == "edgevit" and m.config.stem == "hybrid"
    with pytest.raises(ValueError, match=r"window_overlap=5 must be < window_size\[2\]=2"):
        timm.create_model("nas_faster_vit", config=tiny_config, window_overlap=5)
