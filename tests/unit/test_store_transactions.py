"""SQLite's one shared connection: a transaction never takes other coroutines' writes along.

The kill -9 tests found it: a BEGIN ... COMMIT spread over awaits took in a restart's
history clean-up running at the same moment, its COMMIT failed, and the ROLLBACK undid the
clean-up (the question then stood twice in history).
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from bot.store import Store


async def test_a_failed_memory_batch_keeps_what_others_wrote_meanwhile(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    if not store.vec:
        await store.close()
        pytest.skip("sqlite-vec is not loadable here")
    try:
        first = await store.append_turn("c:1", "user", "hello", 3)
        await store.add_vectors(
            [(first, "c:1", "m", struct.pack("8f", 1, 0, 0, 0, 0, 0, 0, 0))], 8, first)
        # a vector of the wrong size makes the batch fail inside its transaction...
        bad = [(first, "c:1", "m", struct.pack("3f", 1, 0, 0))]
        batch = asyncio.create_task(store.add_vectors(bad, 8, first + 1))
        # ...while another coroutine writes history and clears a setting
        second = await store.append_turn("c:1", "assistant", "hi there", 3)
        await store.set_setting("c:1", "persona", "pirate")
        with pytest.raises(Exception, match=r"(?i)dimension|divisible|length|vector"):
            await batch
        assert [t.id for t in await store.recent_turns("c:1", 1000)] == [first, second]
        assert await store.setting("c:1", "persona") == "pirate"
        assert await store.memory_cursor() == first  # the failed batch moved nothing
    finally:
        await store.close()
    reopened = Store(str(tmp_path / "s.db"))
    await reopened.open()
    try:
        assert await reopened.count_turns("c:1") == 2
        assert await reopened.setting("c:1", "persona") == "pirate"
    finally:
        await reopened.close()
