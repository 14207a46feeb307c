"""Costs, budgets and /usage, as chat members see them, over telegram / discord / console.

Prices come from a test price file (`[usage] prices`): chat output costs $1,000 per 1M
tokens and input nothing, and the fake answers with exactly 20 tokens, so every chat
request costs exactly $0.02, which is also what the bot reserves for it in flight
(`max_output_tokens = 40`: half of it is reserved). Time is the meter's settable clock.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot import chart
from bot.ai import AI, Tokenizer
from bot.budgets import usd
from bot.config import load_config
from bot.prices import PriceTable, Usage
from bot.store import Store
from bot.usage import Meter
from tests.conftest import STORAGES
from tests.fakes.openai_api import FakeOpenAI
from tests.harness import ALICE, BOB, BotReply, Driver, File, User, wait_for
from tests.test_voice import voice_note

ANSWER = "z" * 76  # the fake counts len // 4 + 1 = 20 tokens
REQUEST = 0.02
CAROL = User(1003, "Carol")
PRICES = """
[models."gpt-5.4-mini"]
input = 0.0
output = 1000.0
"""


class Clock:
    """The meter's clock, moved by the test."""

    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when.timestamp()


def admin_ids() -> str:
    return '"1002", "console:bob"'  # Bob is the admin on every platform


def config(tmp_path: Path, budgets: str = "", prices: str = PRICES) -> str:
    path = tmp_path / "prices.toml"
    path.write_text(prices)
    return (f'[usage]\nprices = "{path}"\n[chat]\nmax_output_tokens = 40\n'
            f"[access]\nadmins = [{admin_ids()}]\n[budgets]\n{budgets}\n")


@pytest.fixture
def budgets() -> str:
    """The test's [budgets] lines (parametrize to set them)."""
    return ""


@pytest.fixture
def config_text(budgets: str, tmp_path: Path) -> str:
    return config(tmp_path, budgets)


@pytest.fixture
def clock(chat: Driver) -> Clock:
    assert chat.app is not None
    c = Clock(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    chat.app.ai.meter.clock = c
    return c


def uid(chat: Driver, user: User) -> str:
    """The user's id as the bot sees it on this platform."""
    return user.name.lower() if chat.platform == "console" else str(user.id)


def plain(reply: BotReply) -> BotReply:
    """The reply without Markdown marks (each platform renders them its own way)."""
    return dataclasses.replace(reply, text=reply.text.replace("**", "").replace("`", ""))


async def say(chat: Driver, text: str, user: User = ALICE,
              files: list[File] | None = None) -> list[BotReply]:
    """Send and return every reply that came back for it, as plain text."""
    before = len(chat.replies(user=user))
    await chat.send_text(text, user=user, files=files)
    await chat.settle()
    return [plain(r) for r in chat.replies(user=user)[before:]]


async def ask(chat: Driver, user: User = ALICE) -> list[str]:
    chat.openai.reply(ANSWER)
    return [r.text for r in await say(chat, "hello there", user)]


def requests(chat: Driver) -> int:
    return len(chat.openai.chat_requests)


# --------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("budgets", ["user_daily = 0.05"])
async def test_budget_refuses_before_sending_and_warns_at_80_percent(
        chat: Driver, clock: Clock) -> None:
    assert await ask(chat) == [ANSWER]
    # $0.04 of $0.05: the answer, then one warning
    second = await ask(chat)
    assert second[0] == ANSWER
    assert second[1:] == ["⚠️ Your daily budget is 80% used: $0.04 of $0.05. It resets at "
                          "00:00 UTC (in 12 h 0 min)."]
    # the third would need $0.02 more: refused with one reply, nothing sent to the API
    chat.openai.reply(ANSWER)
    third = await say(chat, "one more")
    assert [r.text for r in third] == [
        "⛔ This would go over your daily budget: $0.04 of $0.05 used. It resets at 00:00 UTC "
        "(in 12 h 0 min)."]
    assert requests(chat) == 2
    assert chat.app is not None
    assert len(await chat.app.store.usage_rows()) == 2


@pytest.mark.parametrize("budgets", ["user_daily = 0.1"])
async def test_images_over_budget_are_refused_unsent(chat: Driver, clock: Clock) -> None:
    # one gpt-image-2 picture at "auto" quality is reserved at its list price, $0.211
    replies = await say(chat, "/draw a lighthouse at dusk")
    assert [r.text for r in replies] == [
        "⛔ This would go over your daily budget: $0.00 of $0.10 used. It resets at 00:00 UTC "
        "(in 12 h 0 min)."]
    assert chat.openai.requests_to("/images/generations") == []
    assert chat.app is not None
    assert await chat.app.store.usage_rows() == []


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("budgets", ["user_daily = 0.1"])
async def test_warning_is_given_once_per_period(chat: Driver, clock: Clock) -> None:
    answers = [await ask(chat) for _ in range(5)]  # $0.02 .. $0.10: 80% after the 4th
    warnings = [a for answer in answers for a in answer if a.startswith("⚠️")]
    assert warnings == ["⚠️ Your daily budget is 80% used: $0.08 of $0.10. It resets at "
                        "00:00 UTC (in 12 h 0 min)."]
    assert answers[3][-1] == warnings[0]
    # a restart forgets nothing: still no second warning this period
    await chat.restart()
    assert chat.app is not None
    chat.app.ai.meter.clock = clock
    # 96% of a slightly higher budget: it would warn, had it not this period already
    await chat.app.ai.meter.budgets.set_override("user", f"{chat.platform}:{uid(chat, ALICE)}",
                                                 "day", 0.125)
    assert [a for a in await ask(chat) if a.startswith("⚠️")] == []


@pytest.mark.parametrize("budgets", ["user_daily = 0.04"])
async def test_budget_resets_at_the_period_boundary(chat: Driver, clock: Clock) -> None:
    clock.set(datetime(2026, 12, 2, 23, 59, 30, tzinfo=UTC))
    await ask(chat)
    await ask(chat)
    refused = await ask(chat)
    assert refused == ["⛔ This would go over your daily budget: $0.04 of $0.04 used. It resets "
                       "at 00:00 UTC (in 1 min)."]
    assert requests(chat) == 2
    clock.set(datetime(2026, 12, 3, 0, 0, 1, tzinfo=UTC))
    assert (await ask(chat))[0] == ANSWER
    assert requests(chat) == 3


@pytest.mark.parametrize("budgets", ["user_monthly = 0.02"])
async def test_monthly_budget_names_the_next_month(chat: Driver, clock: Clock) -> None:
    await ask(chat)
    assert await ask(chat) == [
        "⛔ This would go over your monthly budget: $0.02 of $0.02 used. It resets on "
        "1 January 2027, 00:00 UTC (in 30 days)."]
    clock.set(datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    assert (await ask(chat))[0] == ANSWER


@pytest.mark.parametrize("budgets", ['user_daily = 0.02\ntimezone = "Asia/Tokyo"'])
async def test_days_roll_over_in_the_budget_timezone(chat: Driver, clock: Clock) -> None:
    clock.set(datetime(2026, 12, 2, 14, 59, tzinfo=UTC))  # 23:59 in Tokyo
    await ask(chat)
    assert (await ask(chat))[0].endswith("It resets at 00:00 Asia/Tokyo (in 1 min).")
    clock.set(datetime(2026, 12, 2, 15, 0, tzinfo=UTC))  # midnight in Tokyo
    assert (await ask(chat))[0] == ANSWER


@pytest.mark.parametrize("budgets", ["user_daily = 0.01"])
async def test_admins_are_exempt(chat: Driver, clock: Clock) -> None:
    assert (await ask(chat))[0].startswith("⛔")  # Alice: $0.02 would go over $0.01
    for _ in range(3):
        assert (await ask(chat, BOB))[0] == ANSWER
    assert requests(chat) == 3
    # their spending is counted all the same
    assert chat.app is not None
    rows = await chat.app.store.usage_rows()
    assert [r.user_id for r in rows] == [uid(chat, BOB)] * 3
    assert sum(r.cost or 0 for r in rows) == pytest.approx(3 * REQUEST)


async def test_admins_are_not_exempt_when_configured(chat: Driver, tmp_path: Path) -> None:
    await chat.stop()
    chat.config_text = config(tmp_path, "user_daily = 0.01\nadmins_exempt = false")
    await chat.start()
    assert (await ask(chat, BOB))[0].startswith("⛔ This would go over your daily budget")
    assert requests(chat) == 0


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("budgets", ["user_daily = 0.02"])
async def test_per_user_override_set_and_reset_by_an_admin(chat: Driver, clock: Clock) -> None:
    alice = f"{chat.platform}:{uid(chat, ALICE)}"
    await ask(chat)
    assert (await ask(chat))[0].startswith("⛔")
    # Alice may not raise her own budget
    denied = await say(chat, f"/budget set user {alice} day 1")
    assert [r.text for r in denied] == ["Only bot admins can change budgets."]
    done = await say(chat, f"/budget set user {uid(chat, ALICE)} day 0.06", BOB)
    assert [r.text for r in done] == [f"The daily budget of user {alice} is now $0.06."]
    assert (await ask(chat))[0] == ANSWER
    shown = "\n".join(r.text for r in await say(chat, "/budget"))
    assert "Your daily budget (set by an admin): $0.04 of $0.06 used, $0.02 left." in shown
    # stored: a restart keeps it
    await chat.restart()
    assert chat.app is not None
    chat.app.ai.meter.clock = clock
    assert (await ask(chat))[0] == ANSWER
    reset = await say(chat, f"/budget reset user {alice}", BOB)
    assert [r.text for r in reset] == [
        f"The daily and monthly budget of user {alice} follows the config again."]
    assert (await ask(chat))[0].startswith("⛔ This would go over your daily budget: $0.06 of "
                                           "$0.02 used.")


@pytest.mark.parametrize("budgets", ["user_daily = 0.5\nglobal_monthly = 10"])
async def test_budget_command_shows_what_is_left(chat: Driver, clock: Clock) -> None:
    await ask(chat)
    text = "\n".join(r.text for r in await say(chat, "/budget"))
    assert "Your daily budget: $0.02 of $0.50 used, $0.48 left. Resets at 00:00 UTC" in text
    assert ("The bot's monthly budget: $0.02 of $10.00 used, $9.98 left. Resets on 1 January "
            "2027, 00:00 UTC (in 30 days).") in text
    bob = "\n".join(r.text for r in await say(chat, "/budget", BOB))
    assert "You are an admin: budgets never stop your requests" in bob


async def test_no_budgets_means_no_limits(chat: Driver) -> None:
    text = "\n".join(r.text for r in await say(chat, "/budget"))
    assert "None: usage is not limited." in text


@pytest.mark.parametrize("budgets", ["global_daily = 0.05"])
async def test_concurrent_requests_at_the_edge_of_a_budget(chat: Driver, clock: Clock) -> None:
    if chat.platform == "console":
        pytest.skip("the console is one conversation: its messages are answered in turn")
    users = [User(2000 + i, f"User{i}") for i in range(5)]
    chat.openai.latency = 0.3  # the first requests are still in flight when the rest arrive
    chat.openai.reply(ANSWER, times=5)
    base = chat.received
    for user in users:
        await chat.send_text("all at once", user=user)
    await wait_for(lambda: chat.received >= base + len(users), 10, "all messages")
    assert chat.app is not None
    await chat.app.router.wait_idle(10)
    # $0.02 reserved per request: two fit under $0.05, the others are refused unsent
    assert requests(chat) == 2
    texts = [r.text for u in users for r in chat.replies(user=u)]
    assert texts.count(ANSWER) == 2
    refused = [t for t in texts if t.startswith("⛔")]
    assert len(refused) == 3 and all("the bot's daily budget" in t for t in refused)
    assert chat.app is not None
    rows = await chat.app.store.usage_rows()
    assert sum(r.cost or 0 for r in rows) == pytest.approx(2 * REQUEST)


@pytest.mark.parametrize("budgets", ["chat_daily = 0.02"])
async def test_chat_budget_applies_in_groups_only(chat: Driver, clock: Clock) -> None:
    if not chat.supports_groups:
        pytest.skip("no group chats here")
    chat.openai.reply(ANSWER, times=3)
    await chat.send_text("hi", group=True, mention=True)
    await chat.settle()
    await chat.send_text("again", group=True, mention=True, user=CAROL)
    await chat.settle()
    texts = [r.text for r in chat.replies(group=True)]
    assert texts[0] == ANSWER
    assert texts[-1].startswith("⛔ This would go over this chat's daily budget: $0.02 of $0.02")
    assert (await ask(chat))[0] == ANSWER  # a private chat is not limited by it


# --------------------------------------------------------------------------- /usage


def expected_chat_cost(table: PriceTable, usage: dict[str, object]) -> float:
    details = usage.get("prompt_tokens_details") or {}
    cost = table.cost("gpt-5.4-mini", Usage(
        input_tokens=int(usage["prompt_tokens"]),  # type: ignore[call-overload]
        output_tokens=int(usage["completion_tokens"]),  # type: ignore[call-overload]
        cached_tokens=int(details.get("cached_tokens") or 0)))  # type: ignore[union-attr]
    assert cost is not None
    return cost


def image_of(replies: list[BotReply]) -> Image.Image:
    (png,) = [f.data for r in replies for f in r.files if f.data.startswith(b"\x89PNG")]
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def bars(img: Image.Image) -> list[int]:
    """Coloured pixels in each day's slot of the chart (grid and axes are grey/black)."""
    left, right = chart.MARGIN_LEFT, chart.WIDTH - chart.MARGIN_RIGHT
    top, bottom = chart.MARGIN_TOP, chart.HEIGHT - chart.MARGIN_BOTTOM
    slot = (right - left) / 30
    rgb = img.convert("RGB")
    counts = []
    for i in range(30):
        n = 0
        for x in range(int(left + i * slot + 3), int(left + (i + 1) * slot - 3)):
            for y in range(top, bottom - 2, 3):
                r, g, b = rgb.getpixel((x, y))  # type: ignore[misc]
                n += max(r, g, b) - min(r, g, b) > 40
        counts.append(n)
    return counts


async def test_usage_figures_equal_what_the_api_reported(chat: Driver, tmp_path: Path) -> None:
    await chat.stop()
    chat.config_text = ""  # the shipped price table
    await chat.start()
    assert chat.app is not None
    await chat.ask("first question")
    await chat.ask("second question, a longer one")
    await say(chat, "/draw a small red boat 1024x1024 low")
    reported = chat.openai.reported_usage
    chats = [u for path, u in reported if path == "/chat/completions"]
    (image,) = [u for path, u in reported if path == "/images"]
    assert len(chats) == 2
    table = PriceTable()
    chat_tokens = sum(int(u["prompt_tokens"]) + int(u["completion_tokens"]) for u in chats)
    chat_cost = sum(expected_chat_cost(table, u) for u in chats)
    image_cost = table.cost("gpt-image-2", Usage(input_tokens=image["input_tokens"],
                                                 output_tokens=image["output_tokens"]))
    assert image_cost is not None
    text = "\n".join(r.text for r in await say(chat, "/usage"))
    assert f"chat: 2 requests, {chat_tokens:,} tokens, {usd(chat_cost)}" in text
    image_tokens = image["input_tokens"] + image["output_tokens"]
    assert f"images: 1 request, {image_tokens:,} tokens, {usd(image_cost)}" in text
    assert f"Today: {usd(chat_cost + image_cost)}" in text


async def test_usage_chart_is_a_png_whose_bars_follow_the_usage(chat: Driver,
                                                                clock: Clock) -> None:
    clock.set(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    await ask(chat)
    first = image_of(await say(chat, "/usage"))
    assert first.format == "PNG" and first.size == (chart.WIDTH, chart.HEIGHT)
    before = bars(first)
    assert before[-1] > 0 and sum(before[:-1]) == 0  # one bar: today
    clock.set(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    await ask(chat)
    await ask(chat)
    after = bars(image_of(await say(chat, "/usage")))
    # yesterday's bar moved one slot left; today's (twice yesterday's spend) is taller
    assert after[-2] > 0 and after[-1] > after[-2] and sum(after[:-2]) == 0


async def test_usage_in_a_group_is_the_chats(chat: Driver, clock: Clock) -> None:
    if not chat.supports_groups:
        pytest.skip("no group chats here")
    chat.openai.reply(ANSWER, times=2)
    await chat.send_text("hi", group=True, mention=True)
    await chat.settle()
    await ask(chat)  # Alice's DM: not the group's
    await chat.send_text("/usage", group=True)
    await chat.settle()
    text = "\n".join(plain(r).text for r in chat.replies(group=True))
    assert "This chat's usage" in text and "chat: 1 request, " in text
    assert "$0.02" in text


async def test_usage_all_and_export_are_for_admins(chat: Driver, clock: Clock) -> None:
    await ask(chat)
    await ask(chat)
    await ask(chat, BOB)
    denied = await say(chat, "/usage all")
    assert [r.text for r in denied] == ["Only bot admins can use /usage all."]
    report = "\n".join(r.text for r in await say(chat, "/usage all", BOB))
    alice, bob = (f"{chat.platform}:{uid(chat, u)}" for u in (ALICE, BOB))
    assert f"1. {alice}: 2 requests" in report and f"2. {bob}: 1 request" in report
    assert "1. gpt-5.4-mini: 3 requests" in report and "$0.06" in report
    exported = await say(chat, "/usage export 2026-12-01 2026-12-02", BOB)
    (doc,) = [f for r in exported for f in r.files]
    rows = list(csv.DictReader(io.StringIO(doc.data.decode())))
    assert [r["user_id"] for r in rows] == [uid(chat, ALICE)] * 2 + [uid(chat, BOB)]
    assert {r["feature"] for r in rows} == {"chat"} and {r["estimated"] for r in rows} == {"0"}
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(3 * REQUEST)
    assert all(r["day"] == "2026-12-02" for r in rows)
    # another range has none of them
    empty = await say(chat, "/usage export 2026-11-01 2026-11-30", BOB)
    (doc,) = [f for r in empty for f in r.files]
    assert doc.data.decode().splitlines()[1:] == []
    bad = await say(chat, "/usage export yesterday", BOB)
    assert [r.text for r in bad] == ["from must be a date like 2026-11-30."]


async def test_unpriced_model_is_counted_in_tokens(chat: Driver, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    await chat.stop()
    chat.config_text = '[models]\nchat = "gpt-4o-mini"\n' + config(
        tmp_path, prices='[models."gpt-4o-mini"]\n')
    await chat.start()
    await chat.ask("what does this cost")
    await chat.ask("and this")
    text = "\n".join(r.text for r in await say(chat, "/usage"))
    assert "chat: 2 requests, " in text and "tokens, price unknown" in text
    assert chat.app is not None
    assert [r.cost for r in await chat.app.store.usage_rows()] == [None, None]
    logged = [r for r in caplog.records if "no price for model gpt-4o-mini" in r.getMessage()]
    assert len(logged) == 1


async def test_estimated_rows_are_marked(chat: Driver, clock: Clock) -> None:
    chat.openai.omit_usage = True
    await ask(chat)
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    assert row.estimated and row.completion_tokens > 0
    text = "\n".join(r.text for r in await say(chat, "/usage"))
    assert "(1 estimated)" in text



# --------------------------------------------------------------------------- exact usage


async def default_prices(chat: Driver) -> None:
    await chat.stop()
    chat.config_text = ""  # the shipped price table
    await chat.start()


async def test_cached_input_tokens_are_recorded_and_priced(chat: Driver) -> None:
    await default_prices(chat)
    long = "Please keep this context in mind. " * 150  # ~1,280 tokens: the API caches it
    await chat.ask(long)
    await chat.ask("and now a short follow-up")
    reported = [u for path, u in chat.openai.reported_usage if path == "/chat/completions"]
    cached = reported[1]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024
    assert chat.app is not None
    first, second = await chat.app.store.usage_rows()
    assert (first.cached_tokens, second.cached_tokens) == (0, cached)
    assert second.cost == pytest.approx(expected_chat_cost(PriceTable(), reported[1]))
    # cached input is billed at a tenth: cheaper than the same tokens uncached
    uncached = PriceTable().cost("gpt-5.4-mini", Usage(
        input_tokens=second.prompt_tokens, output_tokens=second.completion_tokens))
    assert uncached is not None and second.cost is not None and second.cost < uncached


async def test_voice_usage_is_what_the_api_reported(chat: Driver) -> None:
    await default_prices(chat)
    chat.openai.transcribe("what time is it")
    await say(chat, "", files=[voice_note(2.0)])
    assert chat.app is not None
    rows = {r.feature: r for r in await chat.app.store.usage_rows()}
    heard = [u for path, u in chat.openai.reported_usage if path == "/audio/transcriptions"]
    spoken = [u for path, u in chat.openai.reported_usage if path == "/audio/speech"]
    (heard_usage,), (spoken_usage,) = heard, spoken
    voice_in, speech_out = rows["voice_in"], rows["speech_out"]
    # gpt-transcribe bills tokens: audio in, text out
    assert heard_usage["type"] == "tokens" and not voice_in.estimated
    assert (voice_in.prompt_tokens, voice_in.completion_tokens) == (
        heard_usage["input_tokens"], heard_usage["output_tokens"])
    table = PriceTable()
    assert voice_in.cost == pytest.approx(table.cost("gpt-transcribe", Usage(
        input_tokens=heard_usage["input_tokens"], output_tokens=heard_usage["output_tokens"],
        audio_input_tokens=heard_usage["input_token_details"]["audio_tokens"])))
    # gpt-4o-mini-tts reports its tokens in the speech stream's last event
    assert not speech_out.estimated
    assert (speech_out.prompt_tokens, speech_out.completion_tokens) == (
        spoken_usage["input_tokens"], spoken_usage["output_tokens"])


@pytest.mark.parametrize("config_text", ['[models]\ntranscribe = "whisper-1"\n'])
async def test_whisper_bills_seconds(chat: Driver) -> None:
    chat.openai.transcribe("hello")
    await say(chat, "", files=[voice_note(3.0)])
    assert chat.app is not None
    (row,) = [r for r in await chat.app.store.usage_rows() if r.feature == "voice_in"]
    (reported,) = [u for p, u in chat.openai.reported_usage if p == "/audio/transcriptions"]
    assert reported["type"] == "duration" and not row.estimated
    assert (row.unit, row.units) == ("seconds", reported["seconds"])
    assert row.cost == pytest.approx(0.006 * reported["seconds"] / 60)


async def test_voice_usage_is_estimated_when_the_server_omits_it(chat: Driver) -> None:
    chat.openai.omit_usage = True
    chat.openai.transcribe("what time is it")
    await say(chat, "", files=[voice_note(2.0)])
    assert chat.app is not None
    rows = {r.feature: r for r in await chat.app.store.usage_rows()}
    assert rows["voice_in"].estimated and rows["voice_in"].unit == "seconds"
    assert 1.5 < rows["voice_in"].units < 2.5  # the recording's length
    assert rows["speech_out"].estimated


async def test_image_edit_counts_input_image_tokens(chat: Driver) -> None:
    await default_prices(chat)
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (200, 30, 30)).save(buf, "PNG")
    await say(chat, "/edit make it blue", files=[File(buf.getvalue(), "red.png", "image/png",
                                                      kind="document")])
    (reported,) = [u for p, u in chat.openai.reported_usage if p == "/images"]
    image_tokens = reported["input_tokens_details"]["image_tokens"]
    assert image_tokens > 0
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    assert row.prompt_tokens == reported["input_tokens"] and not row.estimated
    text_tokens = reported["input_tokens"] - image_tokens
    assert row.cost == pytest.approx(text_tokens * 5e-6 + image_tokens * 8e-6
                                     + reported["output_tokens"] * 30e-6)


async def test_embeddings_are_metered(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    cfg = load_config(None, env={"OPENAI_API_KEY": openai_fake.api_key,
                                 "OPENAI_BASE_URL": openai_fake.url})
    store = Store(str(tmp_path / "db.sqlite3"))
    await store.open()
    ai = AI(cfg, Tokenizer("estimate"), meter=Meter(cfg, store))
    try:
        vectors = await ai.embed("text-embedding-3-small", ["one text", "and another"])
        assert len(vectors) == 2 and len(vectors[0]) == 1536
        (row,) = await store.usage_rows()
        ((_, reported),) = openai_fake.reported_usage
        assert (row.feature, row.prompt_tokens, row.estimated) == (
            "embeddings", reported["prompt_tokens"], False)
        assert row.cost == pytest.approx(reported["prompt_tokens"] * 0.02e-6)
        assert (row.platform, row.user_id) == ("system", None)
    finally:
        await ai.close()
        await store.close()
