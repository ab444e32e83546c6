"""Writing the figures fast without changing them: PNGs rendered by forked processes give the same bytes as one
process, a failed child is redone, and every PDF embeds a real TrueType subset computed once per process."""

from __future__ import annotations

import os
import re
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from vlsm_batch.analysis import figsave, pdffonts, plots

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")


def _figures() -> list:
    return [
        plots.grouped_bars(["coop", "vpt"], {"a": [0.5, 0.6], "b": [0.55, 0.62]}, "test/dice", "bars ω² ± 0.01"),
        plots.heatmap(["coop", "finetune (all weights)"], ["isic", "voc2012"], [[0.7, 0.71], [0.8, None]], "map"),
        plots.barh(["lr", "weight_decay"], [0.4, 0.01], "ω²", "importance"),
    ]


def _embedded_fonts(pdf: bytes) -> list[TTFont]:
    """The TrueType programs (FontFile2 streams, Flate-compressed) a PDF embeds."""
    fonts = []
    for m in re.finditer(rb"/Length1 \d+.*?stream\r?\n", pdf, re.S):
        end = pdf.index(b"endstream", m.end())
        fonts.append(TTFont(BytesIO(zlib.decompress(pdf[m.end() : end]))))
    return fonts


def test_forked_and_serial_writes_give_the_same_files(tmp_path: Path) -> None:
    serial = figsave.save_all([(f, tmp_path / "one" / f"f{i}") for i, f in enumerate(_figures())], workers=1)
    forked = figsave.save_all([(f, tmp_path / "three" / f"f{i}") for i, f in enumerate(_figures())], workers=3)
    for a, b in zip(serial, forked):
        assert [p.suffix for p in a] == [".png", ".pdf", ".svg"]
        for pa, pb in zip(a, b):
            if pa.suffix != ".pdf":  # a PDF carries its creation time
                assert pa.read_bytes() == pb.read_bytes(), pa.name
        with Image.open(b[0]) as im:
            assert im.info["dpi"][0] == pytest.approx(300, abs=1)
        assert "<text" in b[2].read_text()  # text stays text
    assert not list((tmp_path / "three").glob(".*.tmp*"))  # every temporary name was renamed
    assert len(list((tmp_path / "three").glob(".*.key"))) == 3


def test_a_child_that_fails_is_redone_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(work):  # a child that dies before writing anything
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        return pid

    monkeypatch.setattr(figsave, "_fork", broken)
    written = figsave.save_all([(f, tmp_path / f"f{i}") for i, f in enumerate(_figures())], workers=2)
    for paths in written:
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_pdfs_embed_truetype_subsets_computed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert pdffonts.install()  # matplotlib >= 3.11: the subsetting is wrapped
    monkeypatch.setattr(pdffonts, "_cache", {})
    figsave.save_all([(f, tmp_path / f"f{i}") for i, f in enumerate(_figures())], workers=1)
    assert len(pdffonts._cache) == 1  # one DejaVu Sans subset served all three PDFs and both of their subsets
    for i, text in enumerate(("bars ω² ± 0.01", "finetune (all weights)", "weight_decay")):
        pdf = (tmp_path / f"f{i}.pdf").read_bytes()
        assert b"/CIDFontType2" in pdf and b"/FontFile2" in pdf  # Type 42: TrueType glyphs, not Type 3 bitmaps
        fonts = _embedded_fonts(pdf)
        assert fonts and all(len(f.getGlyphOrder()) < 400 for f in fonts)  # a subset, not the whole font
        cmap = fonts[0]["cmap"].getBestCmap()
        assert all(ord(c) in cmap for c in text.replace(" ", "")), text
