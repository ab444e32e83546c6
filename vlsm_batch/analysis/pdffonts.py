"""One TrueType subset per font and process for every PDF that ``analyze`` writes.

Matplotlib embeds fonts in PDFs as Type 42 (what journals ask for) by subsetting the font with fontTools for each
PDF and each character subset: about 0.13 s per subset, two per figure, most of the PDF time of ``analyze``. The
subset depends only on the font file and the glyphs kept, so this wraps matplotlib's subsetting to keep a fixed
superset of glyphs (printable ASCII and the symbols the figures use: ω², ±, −, ×, –, a few Greek letters)
plus whatever a figure needs beyond it, and reuses the result for every later figure that needs nothing more.
Each PDF still embeds a real subset of the font (tens of KB) with text that stays text.

Only matplotlib's subsetting API of 3.11 and later is wrapped (``SubsetResults``); with an older matplotlib
nothing changes (PDFs are then slower to write, never different in content).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from io import BytesIO
from typing import Any

CHARS = (
    "".join(chr(c) for c in range(0x20, 0x7F))  # printable ASCII
    + "±×÷²³°µ·–—−‘’“”…•→≤≥≈≠∞√αβγδεθλμπρσωΔΣΩ"  # what the figures use (ω², ±, −, ×, –) and their neighbours
    + "\ufb00\ufb01\ufb02\ufb03\ufb04"  # ff fi fl ffi ffl: the shaped text of "finetune" uses the fi ligature
)
_cache: dict[tuple[str, int, frozenset[int]], tuple[bytes, dict[int, int]]] = {}
_lock = threading.Lock()
_installed = False


def _superset(fontfile: Any) -> frozenset[int]:
    """The glyph indices of ``CHARS`` in this font (characters it lacks are left out)."""
    from matplotlib.font_manager import get_font

    font = get_font(fontfile)
    return frozenset(g for g in (font.get_char_index(ord(c)) for c in CHARS) if g)


def _subset_once(original: Any, fontfile: Any, glyphs: Iterable[int]) -> tuple[bytes, dict[int, int]]:
    """The subset font's bytes and glyph index map for ``glyphs`` widened to the superset, computed once."""
    from matplotlib.backends import _backend_pdf_ps

    wanted = frozenset(int(g) for g in glyphs)
    try:
        keep = wanted | _superset(fontfile)
    except Exception:  # a font matplotlib cannot map characters for: subset exactly what is asked
        keep = wanted
    key = (os.fspath(fontfile), int(getattr(fontfile, "face_index", 0) or 0), keep)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            with original(fontfile, set(keep)) as result:
                data = _backend_pdf_ps.font_as_file(result.font).getvalue()
                hit = (data, dict(result.glyph_index_map))
            _cache[key] = hit
    return hit


def install() -> bool:
    """Wrap matplotlib's glyph subsetting with the per-process cache (idempotent); False where not supported."""
    global _installed
    if _installed:
        return True
    from matplotlib.backends import _backend_pdf_ps as pdf_ps

    results = getattr(pdf_ps, "SubsetResults", None)
    original = getattr(pdf_ps, "get_glyphs_subset", None)
    if results is None or original is None or not hasattr(results, "_fields"):
        return False
    from fontTools.ttLib import TTFont

    @contextlib.contextmanager
    def cached(fontfile: Any, glyphs: Iterable[int]) -> Iterator[Any]:
        data, index_map = _subset_once(original, fontfile, glyphs)
        # a fresh font object per caller (callers close it); nothing recomputed, so it saves back byte for byte
        font = TTFont(BytesIO(data), recalcBBoxes=False, recalcTimestamp=False)
        with font:
            yield results(font, dict(index_map))

    cached.__wrapped__ = original  # type: ignore[attr-defined]
    pdf_ps.get_glyphs_subset = cached
    _installed = True
    return True
