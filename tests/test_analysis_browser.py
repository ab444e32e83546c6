"""report.html opens in headless Chromium without errors, every plot decodes, no title is cut, every table shows
test Dice without scrolling sideways, and a screenshot of the page is not blank (required when CI=true)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vlsm_batch.analysis.run import analyze
from vlsm_batch.analysis.synthetic import write_study
from vlsm_batch.layout import StudyLayout

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
)


def _chromium() -> str:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return str(CHROMIUM)
    if IN_CI:
        pytest.fail("CI=true but /usr/bin/chromium is missing: run scripts/install_chromium.sh first")
    pytest.skip("/usr/bin/chromium is absent (bash scripts/install_chromium.sh installs it; required when CI=true)")


def test_report_opens_in_headless_chromium_with_every_plot(tmp_path):
    browser = _chromium()
    root = tmp_path / "runs" / "browser"
    write_study(
        root, configs=6, datasets=("isic", "voc2012"), strategies=("coop", "vpt", "maple", "finetune"), history=True
    )
    result = analyze(StudyLayout(root), ["prompt_depth"])
    assert result.curves_plot is not None
    n_images = sum(t.plot is not None for t in result.takeaways) + 2  # + grouped plot + learning curves
    assert n_images >= 6
    # a copy in a folder of its own: nothing next to it to load, the page must be self-contained
    page = tmp_path / "alone" / "report.html"
    page.parent.mkdir()
    shutil.copy(root / "analysis" / "report.html", page)
    profile = tmp_path / "profile"
    proc = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    marker = re.search(r'<p id="image-check"[^>]*data-ok="(\w+)"[^>]*>([^<]*)</p>', proc.stdout)
    if marker is None:
        marker = re.search(r'<p id="image-check"[^>]*>([^<]*)</p>', proc.stdout)
        pytest.fail(f"the report's check did not run: {marker.group(0) if marker else proc.stdout[-2000:]}")
    ok, text = marker.groups()
    assert text == f"images-ok {n_images}/{n_images} errors 0", text
    assert ok == "true"
    layout = re.search(r'<p id="image-check"[^>]*data-layout="([^"]*)"', proc.stdout)
    assert layout is not None and layout.group(1) == "ok", layout.group(1) if layout else proc.stdout[-2000:]
    assert "hidden" in marker.group(0)  # the check's marker is never shown to a reader


def test_report_screenshot_is_not_blank(tmp_path):
    from PIL import Image, ImageStat

    browser = _chromium()
    root = tmp_path / "runs" / "shot"
    write_study(root, configs=4, datasets=("isic",), strategies=("coop", "vpt"), history=True)
    analyze(StudyLayout(root), ["strategy"])
    shot = tmp_path / "page.png"
    proc = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
         f"--screenshot={shot}", (root / "analysis" / "report.html").as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        gray = im.convert("L")
        assert ImageStat.Stat(gray).stddev[0] > 10  # text, tables and figures, not an empty page
        right = gray.crop((1200, 0, 1280, 2400))  # nothing runs off the right edge: the margin stays white
        assert ImageStat.Stat(right).mean[0] > 250
