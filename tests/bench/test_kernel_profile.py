"""bench/kernel_profile.py on the CPU: kernel names go to the right buckets, the ceiling is the official
wall time over our compute-bound kernel time, and a run (tiny models, eager, ATen ops) resumes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def kp():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("kernel_profile_under_test", BENCH / "kernel_profile.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name, bucket", [
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4>>", "attention"),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "conv"),
    ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NNT", "gemm"),
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1", "gemm"),
    ("triton_per_fused_add_native_layer_norm_3", "norm_softmax"),
    ("void (anonymous namespace)::softmax_warp_forward<c10::Half, c10::Half, float, 6>", "norm_softmax"),
    ("triton_poi_fused__to_copy_0", "copy"),
    ("triton_poi_fused__to_copy_clone_12", "copy"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>", "copy"),
    ("triton_poi_fused__to_copy_add_mul_5", "elementwise"),
    ("triton_per_fused__to_copy_add_convolution_gelu_native_layer_norm_permute_8", "norm_softmax"),  # not a conv
    ("triton_poi_fused_convolution_gelu_3", "elementwise"),
    ("triton_tem_fused_addmm_7", "gemm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "elementwise"),
    ("Memcpy DtoD (Device -> Device)", "memcpy"),
    ("aten::mkldnn_convolution", "conv"),
    ("aten::addmm", "gemm"),
    ("some_kernel_nobody_named", "other"),
])
def test_kernel_names_go_to_their_bucket(kp, name, bucket):
    assert kp.categorise(name) == bucket


def _record(images_per_s: float, kernels: dict[str, float]) -> dict:
    return dict(batch_size=100, images_per_s=images_per_s, cv=0.001, kernel_us=kernels)


def test_ceiling_is_official_wall_over_our_compute_bound_time(kp):
    ours = kp.summarise_record(_record(20_000.0, {"nvjet_gemm": 2_000.0, "triton_poi_fused_add_0": 2_000.0}))
    official = kp.summarise_record(_record(16_000.0, {"nvjet_gemm": 2_500.0, "triton_per_fused__softmax_1": 3_000.0}))
    assert ours["wall_us"] == 5_000.0 and ours["gap_us"] == 1_000.0 and ours["compute_us"] == 2_000.0
    c = kp.comparison({"ours/m/best": ours, "official/m/best": official}, "m", "best")
    assert c["ratio"] == 1.25
    assert c["ceiling"] == 3.125  # 6,250 µs official wall / 2,000 µs of our GEMMs
    slow = kp.summarise_record(_record(16_000.0, {"nvjet_gemm": 4_000.0, "triton_per_fused__softmax_1": 3_000.0}))
    assert kp.comparison({"ours/m/best": ours, "official/m/best": slow}, "m", "best")["ceiling"] == 3.5  # kernels > wall
    assert c["compute_ours_over_official"] == 0.8
    # 1.3x needs ours at 6,250 / 1.3 = 4,807.7 µs: 192.3 of our 3,000 µs of memory-bound kernels and gaps
    assert c["cut_for_target"] == pytest.approx(192.3 / 3_000, abs=1e-3)
    assert c["memory_bound_us"] == {"ours": 2_000.0, "official": 3_000.0}
    assert kp.comparison({"ours/m/best": ours, "official/m/best": dict(error="oom")}, "m", "best") is None


def test_smoke_run_profiles_both_codes_and_resumes(kp, tmp_path, capsys):
    out = tmp_path / "kp.json"
    assert kp.main(["--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["models"]) == {f"{impl}/{name}/eager" for impl in ("ours", "official")
                                   for name in ("tiny_hat", "tiny_wide")}
    for key, rec in data["models"].items():
        assert rec.get("error") is None, key
        assert rec["kernel_us"] > 0 and rec["compute_us"] > 0 and rec["buckets"]["conv"] > 0, key
        assert abs(sum(rec["buckets"].values()) - rec["kernel_us"]) < 1.0, key
        assert kp.bucket_times(rec["kernels"]) == rec["buckets"], key  # recomputable from the JSON
    assert set(data["comparison"]) == {"tiny_hat/eager", "tiny_wide/eager"}
    rows = kp.markdown(data)
    assert len(rows) == 2 and all(row.startswith("| tiny_") and row.count("|") == 8 for row in rows)
    stamps = {k: v["timestamp"] for k, v in data["models"].items()}
    assert kp.main(["--smoke", "--out", str(out)]) == 0  # resumed: nothing left to profile
    assert "0 profiles to run" in capsys.readouterr().out
    assert {k: v["timestamp"] for k, v in json.loads(out.read_text())["models"].items()} == stamps


def test_a_file_from_another_gpu_is_refused(kp, tmp_path):
    out = tmp_path / "kp.json"
    out.write_text(json.dumps(dict(env=dict(gpu_name="NVIDIA A100"), models={})))
    with pytest.raises(SystemExit, match="NVIDIA A100"):
        kp.main(["--smoke", "--out", str(out)])
