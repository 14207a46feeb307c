"""Refusal texts for files over a size limit."""

from __future__ import annotations

import pytest

from bot.errors import UserError
from bot.events import Attachment

MB = 1024 * 1024


async def _refusal(size: int | None, actual: int, limit: int) -> str:
    async def reader() -> bytes:
        return b"x" * actual

    a = Attachment(kind="document", filename="f.bin", mime="application/octet-stream",
                   size=size, reader=reader, max_size=limit)
    with pytest.raises(UserError) as e:
        await a.read()
    return str(e.value)


async def test_a_file_just_over_the_limit_does_not_read_as_the_limit() -> None:
    assert await _refusal(int(1.3 * MB), 0, MB) == (
        "That file is too large (1.3 MB; the limit is 1 MB).")
    assert await _refusal(MB + 1, 0, MB) == "That file is too large (1.1 MB; the limit is 1 MB)."


async def test_a_file_larger_than_announced_is_refused_with_its_real_size() -> None:
    # the platform said nothing (or too little) about the size: checked after download
    assert await _refusal(None, 3 * MB, 2 * MB) == (
        "That file is too large (3 MB; the limit is 2 MB).")
