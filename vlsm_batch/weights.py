"""How a ``weights:`` value says what it is: ``hf-hub:ORG/NAME`` (a Hugging Face id) or a local path that starts
with ``./``, ``../``, ``/`` or ``~``. Nothing is guessed from the text's shape.

The old bare form (``CIDAS/clipseg-rd64``, ``ckpt/model.pt``) is still read by the old guess, and ``validate`` notes
the explicit spelling to write instead. A leaf module (no torch, no spec imports): ``validate`` and the model loader
(``models.factory``) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

HUB_PREFIX = "hf-hub:"
PATH_PREFIXES = ("./", "../", "/", "~")


@dataclass(frozen=True)
class WeightsRef:
    """One parsed ``weights:`` value. ``kind`` is ``hub`` or ``path``; None when the value is bare (old form)."""

    kind: str | None
    value: str  # the hub id without its prefix, or the path as written


def parse_weights(text: str) -> WeightsRef:
    """``hf-hub:ORG/NAME`` -> hub, ``./x`` ``../x`` ``/x`` ``~x`` -> path, anything else -> bare (kind None)."""
    if text.startswith(HUB_PREFIX):
        return WeightsRef("hub", text[len(HUB_PREFIX) :])
    if text == "~" or text.startswith(PATH_PREFIXES):
        return WeightsRef("path", text)
    return WeightsRef(None, text)


def explicit_spelling(text: str, kind: str) -> str:
    """What to write instead of a bare value once the old guess has decided ``kind``."""
    return f"{HUB_PREFIX}{text}" if kind == "hub" else f"./{text}"


def deprecation_message(text: str, kind: str, raw: str | None = None) -> str:
    """The note ``validate`` prints for a bare value (``raw``: as written, when ``${VAR}`` expansion changed it)."""
    word = "a Hugging Face id" if kind == "hub" else "a local path"
    if raw is not None and raw != text:
        return (
            f"deprecated bare weights value {raw!r} (= {text!r}, read as {word} by guessing); make the value it "
            f"expands to explicit, {explicit_spelling(text, kind)!r} (in the variable or the ${{VAR:-...}} default)"
        )
    return (
        f"deprecated bare weights value {text!r} (read as {word} by guessing); write "
        f"{explicit_spelling(text, kind)!r} to say so"
    )


def loader_source(weights: str | None) -> str | None:
    """What the model builders get: the hub id without ``hf-hub:``, a path as it is, None for the catalog default.

    Spec-written configs already hold a bare hub id or an absolute path; this also accepts the explicit hub form.
    """
    if weights is None:
        return None
    ref = parse_weights(weights)
    return ref.value if ref.kind == "hub" else weights
