"""report.html opened in headless Chromium: it renders, asks the network for nothing and logs no error."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from recon.cli import main
from tests.conftest import shared_path

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study = shared_path("real/totalseg-example")
    out = tmp_path_factory.mktemp("run")
    assert main(["run", str(study / "ct.nii.gz"), "--seg", str(study / "reference_v1"), "-o", str(out)]) == 0
    return out / "report.html"


def test_report_is_self_contained_and_says_what_it_is(report):
    page = report.read_text()
    assert "<script src=" not in page.replace("<script src=\"data:", "")
    assert "research use" in page and "clinician" in page
    assert "Warnings" in page and page.index("Warnings") < page.index("3D view")
    assert "pedicle screws" in page and "acetabular cups" in page


def test_report_renders_offline_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (.ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    requests, errors = [], []
    screenshot = tmp_path / "report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-gl=swiftshader",
                                                                             "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(report.as_uri())
        page.wait_for_selector(".plotly .main-svg", timeout=30_000)
        page.screenshot(path=str(screenshot))
        browser.close()
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert errors == []
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.std() > 20  # not blank
    assert (pixels < 128).mean() > 0.02  # text, slices and the 3D view drew something dark
