"""Budget periods, reservations and the usage rollup (migration 3 over existing rows)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.budgets import BudgetExceeded, Budgets, Calendar, usd
from bot.config import BudgetsSection
from bot.store import MIGRATIONS, Store, UsageRow
from bot.usage import Caller


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_periods_in_a_timezone_with_daylight_saving() -> None:
    cal = Calendar("Europe/Berlin")
    # 2026-10-25: the clocks go back, the day is 25 hours long
    day = cal.period("day", ts(2026, 10, 25, 12))
    assert day.key == "day:2026-10-25"
    assert day.end.timestamp() - day.start.timestamp() == 25 * 3600
    month = cal.period("month", ts(2026, 12, 31, 23, 30))  # already 2027 in Berlin
    assert (month.key, month.first_day, month.last_day) == (
        "month:2027-01", "2027-01-01", "2027-01-31")
    assert cal.day_of(ts(2026, 12, 31, 23, 30)) == "2027-01-01"
    assert cal.days(ts(2026, 3, 2, 12), 3) == ["2026-02-28", "2026-03-01", "2026-03-02"]


def test_reset_times_read_well() -> None:
    cal = Calendar("UTC")
    now = ts(2026, 12, 2, 23, 15)
    assert cal.resets(cal.period("day", now), now) == "at 00:00 UTC (in 45 min)"
    assert cal.resets(cal.period("month", now), now) == (
        "on 1 January 2027, 00:00 UTC (in 29 days)")


def test_money_is_readable() -> None:
    assert [usd(v) for v in (0, 0.0042, 0.5, 1234.5)] == ["$0.00", "$0.0042", "$0.50",
                                                          "$1,234.50"]


def caller(user: str = "1", *, private: bool = True, admin: bool = False) -> Caller:
    return Caller("telegram", user, "telegram:-5" if not private else f"telegram:{user}",
                  "telegram:-5" if not private else f"telegram:{user}", private, admin)


async def test_reservations_hold_until_released() -> None:
    budgets = Budgets(BudgetsSection(user_daily=1.0), None)
    now = ts(2026, 12, 2, 12)
    first = await budgets.admit(caller(), 0.6, now)
    with pytest.raises(BudgetExceeded) as refused:
        await budgets.admit(caller(), 0.6, now)
    assert "$0.60 of $1.00 used" in refused.value.message
    # another user is not affected
    await budgets.admit(caller("2"), 0.6, now)
    budgets.release(first)
    await budgets.admit(caller(), 0.6, now)


async def test_a_message_admitted_once_finishes_its_work() -> None:
    budgets = Budgets(BudgetsSection(user_daily=1.0), None)
    now = ts(2026, 12, 2, 12)
    who = caller()
    await budgets.admit(who, 0.9, now)
    await budgets.admit(who, 0.9, now)  # the same message's next request: not refused
    with pytest.raises(BudgetExceeded):
        await budgets.admit(caller(), 0.1, now)


async def test_chat_budgets_apply_in_groups_and_admins_are_exempt() -> None:
    budgets = Budgets(BudgetsSection(chat_daily=0.5), None)
    now = ts(2026, 12, 2, 12)
    assert budgets.limits(caller(), now) == []
    (limit,) = budgets.limits(caller(private=False), now)
    assert (limit.scope, limit.key) == ("chat", "telegram:-5")
    await budgets.admit(caller(admin=True, private=False), 5.0, now)
    strict = Budgets(BudgetsSection(chat_daily=0.5, admins_exempt=False), None)
    with pytest.raises(BudgetExceeded):
        await strict.admit(caller(admin=True, private=False), 5.0, now)


def old_database(path: Path) -> None:
    """A database at migration 2 with usage rows in the old labels."""
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    rows = [(1.7e9, "telegram", "telegram:-100:17", "7", "gpt-5.4-mini", "chat", 10, 5, 0),
            (1.7e9 + 60, "telegram", "telegram:-100", "7", "gpt-image-2", "image", 3, 4, 0),
            (1.7e9 + 90, "discord", "discord:9", "8", "whisper-1", "transcribe", 20, 1, 1),
            (1.7e9 + 99, "discord", "discord:9", "8", "gpt-4o-mini-tts", "tts", 5, 50, 1)]
    db.executemany("INSERT INTO usage (created, platform, channel, user_id, model, feature,"
                   " prompt_tokens, completion_tokens, estimated) VALUES"
                   " (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


async def test_migration_keeps_old_usage_and_builds_the_rollup(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_database(path)
    store = Store(str(path))
    await store.open()
    rows = await store.usage_rows()
    assert [(r.feature, r.chat, r.day) for r in rows] == [
        ("chat", "telegram:-100", "2023-11-14"), ("images", "telegram:-100", "2023-11-14"),
        ("voice_in", "discord:9", "2023-11-14"), ("speech_out", "discord:9", "2023-11-14")]
    sums = await store.usage_sums("2023-11-14", "2023-11-14", "chat")
    assert {s.key: (s.requests, s.input_tokens, s.unpriced) for s in sums} == {
        "telegram:-100": (2, 13, 2), "discord:9": (2, 25, 2)}
    # new rows join the same rollup through the trigger
    await store.record_usage(UsageRow("telegram", "telegram:-100:17", "7", "gpt-5.4-mini",
                                      "chat", 1, 1, False, cost=0.25, created=1.7e9 + 120,
                                      day="2023-11-14"))
    by_user = await store.usage_sums("2023-11-14", "2023-11-14", "feature",
                                     user=("telegram", "7"))
    assert {s.key: (s.requests, s.cost) for s in by_user} == {"chat": (2, 0.25),
                                                              "images": (1, 0.0)}
    assert await store.usage_cost("2023-11-01", "2023-11-30") == pytest.approx(0.25)
    await store.close()


async def test_a_new_timezone_redates_the_rollup(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    await store.open()
    late = ts(2026, 12, 2, 23, 30)  # already Dec 3 in Tokyo
    await store.record_usage(UsageRow("console", "console:local", "a", "m", "chat", 1, 1,
                                      False, cost=1.0, created=late, day="2026-12-02"))
    tokyo = Calendar("Asia/Tokyo")
    assert await store.redate_usage("Asia/Tokyo", tokyo.day_of) == 1
    assert await store.usage_timezone() == "Asia/Tokyo"
    assert [s.key for s in await store.usage_sums("2026-12-01", "2026-12-31", "day")] == [
        "2026-12-03"]
    assert await store.usage_cost("2026-12-03", "2026-12-03") == pytest.approx(1.0)
    await store.close()
