"""Every report kind opened in Debian's headless Chromium, offline, as a new user would see it: the
plot is drawn (SVG points, a non-blank screenshot) and every axis title carries its unit.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``./setup.sh test`` installs them) and the
``selenium`` test extra. The pages are opened from ``file://`` with the network cut off, so a page
that needs a CDN shows no plot and fails here.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver "
                    "(./setup.sh test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--allow-file-access-from-files", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"):
        opts.add_argument(arg)  # the proxy points nowhere: nothing can be fetched from the network
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(driver, path: Path) -> list[dict]:
    """Load the page; per plot: axis titles, number of drawn points and lines, and a screenshot's colours."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.querySelectorAll('.plotly-graph-div').length > 0 && "
        "[...document.querySelectorAll('.plotly-graph-div')].every(g => g.querySelector('.main-svg'))"))
    out = []
    for div in driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div"):
        info = driver.execute_script("""
            const g = arguments[0];
            const t = s => [...g.querySelectorAll(s)].map(e => e.textContent);
            return {x: t('.xtitle'), y: t('.ytitle'), legend: t('.legendtext'),
                    points: g.querySelectorAll('.scatterlayer .points path').length,
                    lines: g.querySelectorAll('.scatterlayer .js-line').length};""", div)
        img = Image.open(io.BytesIO(div.screenshot_as_png)).convert("RGB")
        info["colours"] = len(set(img.resize((200, 150)).getdata()))
        out.append(info)
    return out


def _pareto_study(tmp_path: Path):
    st = optuna.create_study(directions=["maximize", "maximize"], study_name="browser",
                             storage=f"sqlite:///{tmp_path}/b.db")
    st.set_user_attr("objectives", ["accuracy", "throughput"])
    st.set_user_attr("proxy", "jacob_cov")
    st.set_user_attr("settings", dict(proxy="jacob_cov", batch_size=128, dtype="fp16", profile_mode="cudagraph",
                                      space="default"))
    for i in range(12):
        st.add_trial(optuna.trial.create_trial(values=[-100.0 + 3 * i, 20000.0 - 1200 * i + 300 * (i % 3)],
                                               user_attrs={"params": 30e6 + 1e6 * i, "flops": 3e9,
                                                           "preset": "faster_vit_0_224" if i == 4 else None}))
    return st


def test_pareto_report_draws_its_plots_with_units(browser, tmp_path):
    from nas.pareto import ReferencePoint, study_references, write_report

    st = _pareto_study(tmp_path)
    outside = [ReferencePoint("faster_vit_1_224", [-90.0, 9000.0], False, None, "measured apart")]
    path = write_report(st, tmp_path / "pareto.html", references=study_references(st, outside), png=False)
    front, hv = _open(browser, path)
    assert front["x"] == ["jacob_cov score"]
    assert front["y"] == ["throughput, img/s (batch 128, 224 px, fp16, cudagraph)"]
    assert front["points"] >= 12 + 1 + 1 and front["lines"] >= 1 and front["colours"] > 20
    assert any("not part of the study" in t for t in front["legend"]) and any("Pareto front" in t for t in front["legend"])
    assert hv["x"] == ["trial number (completed trials)"] and "img/s" in hv["y"][0] and hv["lines"] >= 1


def test_compare_report_draws_the_figure_with_units(browser, tmp_path):
    from nas.compare import ModelRow, pareto_front, resolve_models
    from nas.compare_report import write_compare_html

    rows = [ModelRow(name=p.name, family=p.family, code="nas" if p.is_fastervit else "timm",
                     model_id=p.preset or p.timm_id, resolution=p.resolution, mode="cudagraph", params_m=p.params_m,
                     gmacs=p.gflops, paper_params_m=p.params_m, paper_gflops=p.gflops, img_s=2 * p.a100_img_s,
                     paper_a100_img_s=p.a100_img_s, ratio=2.0, top1=p.top1) for p in resolve_models(None)]
    front, dominated = pareto_front(rows)
    import dataclasses

    d = dict(gpu="TEST GPU", environment=dict(device="cuda", torch="x", timm="y", cuda="z"), created="now", wall_s=1,
             settings=dict(batch_size=128, dtype="fp16", modes=["cudagraph"], warmup=3, repeats=10),
             rows=[dataclasses.asdict(r) for r in rows], front=front, dominated=dominated, skipped=[], tables=None,
             published_source="FasterViT paper", flops_method="FlopCounterMode")
    path = write_compare_html(json.loads(json.dumps(d)), tmp_path / "compare.html")
    (fig,) = _open(browser, path)
    assert fig["x"] == ["throughput on TEST GPU, img/s (batch 128, Table 1 resolution, fp16, cudagraph; log scale)"]
    assert fig["y"] == ["ImageNet-1K top-1 % (paper, Table 1)"]
    assert fig["points"] >= len(rows) and fig["lines"] >= 2 and fig["colours"] > 20
    assert {"FasterViT-0..6 (our generator)", "Pareto front on this device", "ConvNets"} <= set(fig["legend"])


@pytest.mark.parametrize("name", ["nsga2-seed0", "random-seed0"])
def test_committed_search_reports_render_offline(browser, name):
    path = ROOT / "results" / "benchmarks" / "search" / f"{name}.html"
    front, hv = _open(browser, path)
    assert front["x"] == ["jacob_cov score"] and "img/s (batch 128, 224 px, fp16, cudagraph)" in front["y"][0]
    assert front["points"] >= 100 and front["colours"] > 20
    assert hv["y"][0].startswith("hypervolume (") and hv["lines"] >= 1
