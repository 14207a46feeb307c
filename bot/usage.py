"""The meter every paid request passes through: budget check, reservation, usage row.

bot/ai.py wraps each paid call (chat, vision, images, transcription, speech, embeddings;
the assistant's Responses calls and tools use `Meter.request` the same way):

    charge = await meter.start("images", model, estimate)   # may raise BudgetExceeded
    ... the request ...
    await charge.done(usage)                                 # the API's figures

Who is asking comes from a context variable the router sets for each message (`Caller`),
so no handler passes it and none can skip the check. `done()` is the one place a
UsageRow is built: dollars from the price table, the local day of the budget timezone,
the user, the chat and the feature. 80% warnings collect on the caller; the router sends
them after the answer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.budgets import Budgets, Calendar, Hold
from bot.config import Config
from bot.prices import PriceTable, Usage
from bot.store import UsageRow

if TYPE_CHECKING:
    from bot.events import Inbound
    from bot.store import Store

log = logging.getLogger(__name__)

FEATURES = ("chat", "vision", "images", "voice_in", "speech_out", "assistant", "tools",
            "embeddings")
FEATURE_LABELS = {"chat": "chat", "vision": "vision", "images": "images",
                  "voice_in": "voice in", "speech_out": "speech out", "assistant": "assistant",
                  "tools": "tools", "embeddings": "embeddings"}


@dataclass(slots=True)
class Caller:
    """Who a paid request is for: set per message by the router, read by the meter."""

    platform: str
    user_id: str | None
    channel: str
    chat: str
    private: bool = True
    admin: bool = False
    # passed a budget check: the rest of this message's work is not refused
    admitted: bool = False
    notices: list[str] = field(default_factory=list)

    @property
    def user_key(self) -> str:
        """`platform:user_id`, how budgets and overrides name a user."""
        return f"{self.platform}:{self.user_id}"

    @classmethod
    def of(cls, inbound: Inbound, *, admin: bool) -> Caller:
        """The caller of a platform message."""
        key = inbound.channel
        return cls(platform=key.platform, user_id=inbound.author.id, channel=str(key),
                   chat=f"{key.platform}:{key.chat_id}", private=inbound.is_private,
                   admin=admin)


# requests outside any message (start-up probes, maintenance) count for the bot only
SYSTEM = Caller(platform="system", user_id=None, channel="system", chat="system")
CALLER: ContextVar[Caller | None] = ContextVar("usage_caller", default=None)


def current_caller() -> Caller:
    """The caller of the message being handled (SYSTEM outside one)."""
    return CALLER.get() or SYSTEM


class Charge:
    """One paid request in flight: its reservation until `done()` records the usage."""

    def __init__(self, meter: Meter, caller: Caller, feature: str, model: str,
                 estimate: Usage, hold: Hold) -> None:
        self.meter = meter
        self.caller = caller
        self.feature = feature
        self.model = model
        self.estimate = estimate
        self.hold = hold
        self.finished = False

    async def done(self, usage: Usage | None = None) -> None:
        """Record what the request consumed (the estimate, marked so, if None)."""
        if self.finished:
            return
        self.finished = True
        if usage is None:
            usage = dataclasses.replace(self.estimate, estimated=True)
        await self.meter._record(self, usage)

    def cancel(self) -> None:
        """The request failed before the API billed anything: drop the reservation."""
        if not self.finished:
            self.finished = True
            self.meter.budgets.release(self.hold)


class Meter:
    """Prices, budgets and the usage table behind every paid request."""

    def __init__(self, config: Config, store: Store | None = None, *,
                 prices: PriceTable | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.prices = prices or PriceTable(config.usage.prices)
        self.budgets = Budgets(config.budgets, store)
        # tests set this to move time (period boundaries) without sleeping
        self.clock = clock

    @property
    def calendar(self) -> Calendar:
        """Local days and months of the budget timezone."""
        return self.budgets.calendar

    async def open(self) -> None:
        """Load overrides; re-date stored usage once if the budget timezone changed."""
        await self.budgets.load()
        if self.store is None:
            return
        stored = await self.store.usage_timezone()
        wanted = self.config.budgets.timezone
        if stored != wanted:
            started = time.monotonic()
            rows = await self.store.redate_usage(wanted, self.calendar.day_of)
            log.info("usage: %d rows re-dated from %s to %s days in %.1f s", rows, stored,
                     wanted, time.monotonic() - started)

    async def start(self, feature: str, model: str, estimate: Usage) -> Charge:
        """Check the caller's budgets (BudgetExceeded: nothing is sent) and reserve."""
        caller = current_caller()
        cost = self.prices.estimate(model, estimate)
        hold = await self.budgets.admit(caller, cost, self.clock())
        return Charge(self, caller, feature, model, estimate, hold)

    async def check(self, feature: str, model: str, estimate: Usage) -> None:
        """Would start() refuse? (BudgetExceeded; nothing is reserved.) For replies that
        should not begin with a progress message; start() still checks for real."""
        await self.budgets.check(current_caller(), self.prices.estimate(model, estimate),
                                 self.clock())

    @asynccontextmanager
    async def request(self, feature: str, model: str,
                      estimate: Usage) -> AsyncIterator[Charge]:
        """start() ... done(): a failure inside releases the reservation unrecorded; a
        block that ends without done() records the estimate."""
        charge = await self.start(feature, model, estimate)
        try:
            yield charge
        except BaseException:
            charge.cancel()
            raise
        await charge.done()

    async def _record(self, charge: Charge, usage: Usage) -> None:
        """Build and store the usage row (the one place), then settle the budgets."""
        caller = charge.caller
        budgets = self.budgets
        budgets.release(charge.hold)
        now = self.clock()
        cost = self.prices.cost(charge.model, usage)
        row = UsageRow(
            platform=caller.platform, channel=caller.channel, user_id=caller.user_id,
            model=charge.model, feature=charge.feature, prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens, estimated=usage.estimated,
            cached_tokens=usage.cached_tokens, units=usage.units, unit=usage.unit, cost=cost,
            created=now, day=self.calendar.day_of(now), chat=caller.chat)
        crossed = budgets.account(caller, cost or 0.0, now)
        try:
            if self.store is not None:
                await self.store.record_usage(row)
            caller.notices += await budgets.warnings(crossed, now)
        except Exception:
            log.exception("could not record usage of %s (%s)", charge.model, charge.feature)
