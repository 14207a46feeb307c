"""Storage: budgeted recent history, reset without loss, survival across reopen."""

from __future__ import annotations

from pathlib import Path

from bot.store import Store, UsageRow


async def test_recent_turns_fit_budget_and_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    await store.open()
    for i in range(10):
        await store.append_turn("c:1", "user", f"m{i}", 10)
    await store.append_turn("c:2", "user", "other", 10)
    turns = await store.recent_turns("c:1", 35)
    assert [t.content for t in turns] == ["m7", "m8", "m9"]
    await store.set_setting("c:1", "persona", "pirate")
    await store.record_usage(UsageRow("console", "c:1", "u", "m", "chat", 5, 6, False))
    await store.close()

    store = Store(path)
    await store.open()
    assert [t.content for t in await store.recent_turns("c:1", 1000)][-1] == "m9"
    assert await store.setting("c:1", "persona") == "pirate"
    assert len(await store.usage_rows()) == 1
    await store.reset_context("c:1")
    assert await store.recent_turns("c:1", 1000) == []
    assert await store.count_turns("c:1") == 10
    await store.append_turn("c:1", "user", "after", 10)
    assert [t.content for t in await store.recent_turns("c:1", 1000)] == ["after"]
    assert [t.content for t in await store.recent_turns("c:2", 1000)] == ["other"]
    await store.close()


async def test_conversation_ids(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    assert await store.conversation_id("c", "responses") is None
    await store.set_conversation_id("c", "responses", "conv_1")
    assert await store.conversation_id("c", "responses") == "conv_1"
    await store.set_conversation_id("c", "responses", None)
    assert await store.conversation_id("c", "responses") is None
    await store.close()


async def test_images_kept_per_channel_with_eviction(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    turn = await store.append_turn("c", "user", "look", 5)
    ids = [await store.add_image("c", bytes([i]), "image/jpeg", 10, 10, 85, turn_id=turn,
                                 message_id=f"m{i}", keep=3) for i in range(5)]
    await store.add_image("d", b"x", "image/png", 1, 1, 85, keep=3)
    kept = await store.last_images("c", 10)
    assert [i.id for i in kept] == ids[:1:-1]  # newest three, newest first
    assert [i.data for i in kept] == [b"\x04", b"\x03", b"\x02"]
    assert [i.id for i in await store.images_by_message("c", "m4")] == ids[-1:]
    assert await store.images_by_message("c", "m0") == []  # evicted
    await store.reset_context("c")
    assert await store.last_images("c", 10) == []
    after = await store.append_turn("c", "user", "new picture", 5)
    await store.add_image("c", b"new", "image/png", 1, 1, 85, turn_id=after)
    assert [i.data for i in await store.last_images("c", 10)] == [b"new"]
    assert len(await store.last_images("d", 10)) == 1
    await store.close()
