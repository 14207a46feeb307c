"""tiktoken's o200k_base encoding, shipped with the package so nothing is downloaded.

tiktoken fetches its encodings from OpenAI's blob storage on first use; a server without
internet (or a container built offline) would then fall back to the size estimate. The
ranks file ships gzip-compressed in bot/data/ and is accepted only when its SHA-256 equals
the hash tiktoken itself publishes for it. The pattern and special tokens are tiktoken's
(tests compare them with the installed tiktoken's definition).

Provenance: rebuilt from the o200k vocabulary in the quicktok-v1 0.4.0 wheel on PyPI
(MIT; derived from tiktoken) into tiktoken's text format; the result is byte-identical to
OpenAI's file, which the checksum proves. Any copy with that checksum will do.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from importlib import resources
from typing import Any

NAME = "o200k_base"
DATA_FILE = "o200k_base.tiktoken.gz"
# tiktoken_ext/openai_public.py: expected_hash of o200k_base.tiktoken
SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


class EncodingDataError(Exception):
    """The shipped ranks file is missing or does not match the published checksum."""


def ranks_bytes() -> bytes:
    """The verified .tiktoken file content (base64 token, space, rank per line)."""
    try:
        packed = resources.files("bot").joinpath("data", DATA_FILE).read_bytes()
        data = gzip.decompress(packed)
    except (OSError, EOFError) as e:
        raise EncodingDataError(f"bot/data/{DATA_FILE} cannot be read: {e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise EncodingDataError(
            f"bot/data/{DATA_FILE} has SHA-256 {digest[:12]}…, expected {SHA256[:12]}…")
    return data


def mergeable_ranks() -> dict[bytes, int]:
    """Token bytes -> rank, parsed like tiktoken.load.load_tiktoken_bpe does."""
    ranks: dict[bytes, int] = {}
    for line in ranks_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def o200k_base() -> Any:
    """A tiktoken.Encoding identical to tiktoken.get_encoding("o200k_base"), offline."""
    import tiktoken

    return tiktoken.Encoding(name=NAME, pat_str=PATTERN, mergeable_ranks=mergeable_ranks(),
                             special_tokens=SPECIAL_TOKENS)
