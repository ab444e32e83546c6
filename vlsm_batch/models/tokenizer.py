"""CLIP BPE tokenizers that work offline.

On transformers 5, ``CLIPTokenizer.from_pretrained(<hub id>)`` without network access silently returns a 2-token
tokenizer instead of failing, so every tokenizer made here is checked for the full 49,408-entry vocabulary.
The offline tokenizer is built in memory from the BPE merge list that open_clip ships inside its package (the same
file OpenAI's CLIP uses), so random-init and tiny models need no download at all.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VlsmBatchError
from .configs import VOCAB_SIZE

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_ID = 49406
EOS_ID = 49407
_NUM_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges of the BPE file
BPE_ENV = "VLSM_BATCH_CLIP_BPE"  # path to bpe_simple_vocab_16e6.txt.gz where open_clip is not installed
_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# transformers' CLIPTokenizer pre-tokenizer (tokenization_clip.py), which count_tokens mirrors
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class TokenizerUnavailableError(VlsmBatchError):
    """No usable CLIP tokenizer could be made (missing files, no network, wrong vocabulary)."""


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte -> printable-character table (GPT-2 byte-level BPE), in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def bpe_path() -> Path:
    """Where the BPE merge list is: ``$VLSM_BATCH_CLIP_BPE`` or open_clip's package folder (not imported)."""
    override = os.environ.get(BPE_ENV)
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("open_clip")  # locates the package without importing it (~4 s)
        if spec is None or not spec.submodule_search_locations:
            raise TokenizerUnavailableError(
                f"the offline CLIP tokenizer needs open_clip_torch installed, or {BPE_ENV} set to a copy of {_BPE_NAME}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / _BPE_NAME
    if not path.is_file():
        raise TokenizerUnavailableError(f"CLIP BPE vocabulary not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _bpe_tables() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocabulary and merges in CLIP's id order: bytes, bytes+</w>, merges, <|startoftext|>, <|endoftext|>."""
    with gzip.open(bpe_path(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1 : _NUM_MERGES + 1]
    merges = tuple((a, b) for a, b in (line.split() for line in lines))
    base = _bytes_to_unicode()
    tokens = [*base, *(c + "</w>" for c in base), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return vocab, merges


@functools.lru_cache(maxsize=1)
def _counting_tokenizer() -> Any:
    """The ``tokenizers`` pipeline of transformers' ``CLIPTokenizer`` over the offline BPE tables, without
    importing transformers (about 1 s) or torch: ``validate`` counts context_init tokens with it."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    vocab, merges = _bpe_tables()
    tok = Tokenizer(
        BPE(
            vocab=dict(vocab),
            merges=list(merges),
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token="<|endoftext|>",
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    return tok


def count_tokens(text: str) -> int:
    """How many tokens ``text`` makes without BOS/EOS, as ``CLIPTokenizer(text, add_special_tokens=False)`` counts.

    Raises TokenizerUnavailableError when the BPE file is missing (like every offline tokenizer here).
    """
    return len(_counting_tokenizer().encode(text, add_special_tokens=False).ids)


def check_tokenizer(tokenizer: CLIPTokenizer, source: str) -> CLIPTokenizer:
    """Refuse a tokenizer without CLIP's full vocabulary or special ids (the silent offline failure)."""
    if len(tokenizer) != VOCAB_SIZE or tokenizer.bos_token_id != BOS_ID or tokenizer.eos_token_id != EOS_ID:
        raise TokenizerUnavailableError(
            f"the tokenizer loaded from {source!r} has {len(tokenizer)} tokens (bos={tokenizer.bos_token_id}, "
            f"eos={tokenizer.eos_token_id}); CLIP needs {VOCAB_SIZE} with bos={BOS_ID}, eos={EOS_ID}. Without "
            "network access transformers returns a stub tokenizer: pass a local checkpoint folder in the spec's "
            "`weights:`, or download the model beforehand and set HF_HUB_OFFLINE=1"
        )
    return tokenizer


def offline_clip_tokenizer() -> CLIPTokenizer:
    """A fresh ``CLIPTokenizer`` built in memory from open_clip's BPE file (about 50 ms, no files written)."""
    from transformers import CLIPTokenizer

    vocab, merges = _bpe_tables()
    # transformers annotates merges as list[str]; it hands them to tokenizers' BPE, which takes (a, b) pairs
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges))  # type: ignore[arg-type]
    return check_tokenizer(tokenizer, "open_clip BPE")


def load_tokenizer(source: str | None) -> CLIPTokenizer:
    """Tokenizer for a checkpoint (hub id or local folder); ``None`` means the offline BPE tokenizer."""
    if source is None:
        return offline_clip_tokenizer()
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise TokenizerUnavailableError(
            f"could not load the tokenizer of {source!r} ({exc}). Pass a local checkpoint folder in the spec's "
            "`weights:`, or download the model beforehand and set HF_HUB_OFFLINE=1"
        ) from exc
    return check_tokenizer(tokenizer, source)
