"""Spending limits: which budgets apply to a caller, what is spent and reserved, refusals.

Budgets are US dollars per user, per group chat and for the whole bot, per day and per
month in `[budgets] timezone` (0 = unlimited); admins may set per-user and per-chat
overrides. Spend per budget is read from the daily rollup once per period and then kept
in memory, updated as each request's usage is recorded: checks cost no query. A request
reserves its estimated cost while in flight, so concurrent requests see each other and
can overshoot a budget by at most what is in flight when it runs out.

With several worker processes (bot/cluster.py) `shared` is set: the spend is read from
the rollup on every check (PostgreSQL keeps it in the same statement as each usage row),
so every worker sees what the others recorded; reservations stay per process, so the
overshoot is at most what all workers have in flight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.config import BudgetsSection
from bot.errors import ModelError

if TYPE_CHECKING:
    from bot.store import Store
    from bot.usage import Caller

log = logging.getLogger(__name__)

WARN_AT = 0.8
PERIODS = ("day", "month")
SCOPES = ("user", "chat", "global")
GLOBAL_KEY = "*"
_ADJECTIVE = {"day": "daily", "month": "monthly"}
_OWNER = {"user": "your", "chat": "this chat's", "global": "the bot's"}
# prune per-period memory once this many budget slots are kept
_PRUNE_AT = 50_000
# dollar sums are floats: a nano-dollar of slack keeps $0.02 + $0.02 at 80% of $0.05
EPSILON = 1e-9

Slot = tuple[str, str, str]  # (scope, key, period key)


def usd(amount: float) -> str:
    """Dollars for people: $1.23, small amounts with enough digits to be seen ($0.0042)."""
    if amount == 0:
        return "$0.00"
    if abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


@dataclass(frozen=True, slots=True)
class Period:
    """One day or month in the budget timezone: [start, end)."""

    kind: str
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """Names the period in slots and stored warnings: `day:2026-12-02`, `month:2026-12`."""
        text = self.start.date().isoformat()
        return f"{self.kind}:{text if self.kind == 'day' else text[:7]}"

    @property
    def first_day(self) -> str:
        """The first local day, as stored in the usage rollup."""
        return self.start.date().isoformat()

    @property
    def last_day(self) -> str:
        """The last local day, as stored in the usage rollup."""
        return (self.end.date() - timedelta(days=1)).isoformat()


class Calendar:
    """Local days and months of the budget timezone."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.name = timezone
        self.tz = ZoneInfo(timezone)

    def day_of(self, ts: float) -> str:
        """The local day of a timestamp, as stored with each usage row."""
        return datetime.fromtimestamp(ts, self.tz).date().isoformat()

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self.tz)

    def period(self, kind: str, ts: float) -> Period:
        """The day or month containing a timestamp."""
        today = datetime.fromtimestamp(ts, self.tz).date()
        if kind == "day":
            return Period(kind, self._midnight(today), self._midnight(today + timedelta(1)))
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return Period(kind, self._midnight(first), self._midnight(following))

    def days(self, ts: float, count: int) -> list[str]:
        """The last `count` local days up to the one containing ts, oldest first."""
        today = datetime.fromtimestamp(ts, self.tz).date()
        return [(today - timedelta(days=i)).isoformat() for i in range(count - 1, -1, -1)]

    def resets(self, period: Period, now: float) -> str:
        """When a period ends, for people: `at 00:00 UTC (in 5 h 12 min)`."""
        left = max(0, int(period.end.timestamp() - now))
        if left < 3600:
            wait = f"{max(1, left // 60)} min"
        elif left < 48 * 3600:
            wait = f"{left // 3600} h {left % 3600 // 60} min"
        else:
            wait = f"{round(left / 86400)} days"
        end = period.end
        when = (f"at 00:00 {self.name}" if period.kind == "day" else
                f"on {end.day} {end:%B %Y}, 00:00 {self.name}")
        return f"{when} (in {wait})"


@dataclass(frozen=True, slots=True)
class Limit:
    """One budget that applies to a request: whose, which period, how many dollars."""

    scope: str
    key: str
    period: Period
    amount: float
    overridden: bool = False

    @property
    def slot(self) -> Slot:
        """The key of its spend and reservations in memory and of its stored warning."""
        return (self.scope, self.key, self.period.key)

    def owner(self) -> str:
        """`your` / `this chat's` / `the bot's`."""
        return _OWNER[self.scope]

    def name(self) -> str:
        """`daily` / `monthly`."""
        return _ADJECTIVE[self.period.kind]


class BudgetExceeded(ModelError):
    """A request refused before it was sent: it would go over a budget."""

    def __init__(self, message: str, limit: Limit) -> None:
        super().__init__(message, "budget")
        self.limit = limit


@dataclass(slots=True)
class Hold:
    """What one request in flight has reserved."""

    slots: list[Slot] = field(default_factory=list)
    amount: float = 0.0


@dataclass(frozen=True, slots=True)
class Standing:
    """A budget with what is spent and reserved now (for /budget)."""

    limit: Limit
    spent: float
    reserved: float

    @property
    def left(self) -> float:
        """Dollars left (never negative)."""
        return max(0.0, self.limit.amount - self.spent - self.reserved)


class Budgets:
    """Limits from config and admin overrides; spend and reservations per budget slot."""

    def __init__(self, section: BudgetsSection, store: Store | None) -> None:
        self.section = section
        self.store = store
        self.calendar = Calendar(section.timezone)
        self.overrides: dict[tuple[str, str, str], float] = {}
        self._spent: dict[Slot, float] = {}
        self._reserved: dict[Slot, float] = {}
        # usage recorded for slots not loaded yet: a load that raced with it is redone
        self._missed: dict[Slot, int] = {}
        self._warned: set[Slot] = set()
        self._configured = any(getattr(section, f"{s}_{p}") > 0 for s in SCOPES
                               for p in ("daily", "monthly"))
        # several processes spend from the same budgets (bot/cluster.py's workers): each
        # check reads the spend from the database instead of this process's running sum
        self.shared = False

    async def load(self) -> None:
        """Read the admins' overrides."""
        if self.store is not None:
            self.overrides = {(o.scope, o.key, o.period): o.amount
                              for o in await self.store.budget_overrides()}

    @property
    def active(self) -> bool:
        """Whether any budget is set at all (else checks are skipped entirely)."""
        return self._configured or any(v > 0 for v in self.overrides.values())

    def exempt(self, caller: Caller) -> bool:
        """Admins are not stopped by budgets unless `admins_exempt = false`."""
        return caller.admin and self.section.admins_exempt

    def _amount(self, scope: str, key: str, period: str) -> tuple[float, bool]:
        override = self.overrides.get((scope, key, period))
        if override is not None:
            return override, True
        field_name = f"{scope}_{'daily' if period == 'day' else 'monthly'}"
        return float(getattr(self.section, field_name)), False

    def limits(self, caller: Caller, now: float) -> list[Limit]:
        """The budgets (amount > 0) that apply to this caller now.

        A user's own budgets; a group chat's budgets (a private chat is the user's own,
        so chat budgets apply in groups only); the whole bot's.
        """
        out: list[Limit] = []
        for kind in PERIODS:
            period = self.calendar.period(kind, now)
            owners: list[tuple[str, str]] = []
            if caller.user_id is not None:
                owners.append(("user", caller.user_key))
            if not caller.private:
                owners.append(("chat", caller.chat))
            owners.append(("global", GLOBAL_KEY))
            for scope, key in owners:
                amount, overridden = self._amount(scope, key, kind)
                if amount > 0:
                    out.append(Limit(scope, key, period, amount, overridden))
        return out

    async def spent(self, limit: Limit) -> float:
        """Dollars spent in a budget's period (from the rollup once, then from memory;
        shared: from the rollup every time)."""
        slot = limit.slot
        if self.shared:
            # the rollup is kept by a trigger on usage, in the same statement as each row:
            # what every worker recorded so far, one indexed read per budget
            self._spent[slot] = value = await self._query(limit)
            return value
        while slot not in self._spent:
            missed = self._missed.get(slot, 0)
            value = await self._query(limit)
            if self._missed.get(slot, 0) == missed:
                self._spent.setdefault(slot, value)
                self._missed.pop(slot, None)
        return self._spent[slot]

    async def _query(self, limit: Limit) -> float:
        if self.store is None:
            return 0.0
        period = limit.period
        if limit.scope == "user":
            platform, _, user_id = limit.key.partition(":")
            return await self.store.usage_cost(period.first_day, period.last_day,
                                               user=(platform, user_id))
        if limit.scope == "chat":
            return await self.store.usage_cost(period.first_day, period.last_day,
                                               chat=limit.key)
        return await self.store.usage_cost(period.first_day, period.last_day)

    async def check(self, caller: Caller, estimate: float, now: float) -> None:
        """Refuse (BudgetExceeded) as admit() would, reserving nothing: lets a handler
        answer a refusal before it posts a progress message."""
        if not self.active or caller.admitted or self.exempt(caller):
            return
        for limit in self.limits(caller, now):
            used = await self.spent(limit) + self._reserved.get(limit.slot, 0.0)
            if used >= limit.amount - EPSILON or used + estimate > limit.amount + EPSILON:
                raise BudgetExceeded(self.refusal(limit, used, now), limit)

    async def admit(self, caller: Caller, estimate: float, now: float) -> Hold:
        """Refuse (BudgetExceeded) or reserve `estimate` dollars on every budget that applies.

        Only a message's first paid request is checked: once admitted, the rest of its
        work (a transcript's answer, its spoken reply) finishes even if a budget runs out.
        """
        if not self.active:
            return Hold()
        limits = self.limits(caller, now)
        if not limits:
            return Hold()
        spent = [await self.spent(limit) for limit in limits]
        # no await from here on: the check and the reservation are one step
        if not (caller.admitted or self.exempt(caller)):
            for limit, done in zip(limits, spent, strict=True):
                used = done + self._reserved.get(limit.slot, 0.0)
                if used >= limit.amount - EPSILON or used + estimate > limit.amount + EPSILON:
                    log.info("budget: refused %s in %s: %s %s budget %s of %s used",
                             caller.user_key, caller.channel, limit.scope, limit.name(),
                             usd(used), usd(limit.amount))
                    raise BudgetExceeded(self.refusal(limit, used, now), limit)
        caller.admitted = True
        hold = Hold([limit.slot for limit in limits], estimate)
        for slot in hold.slots:
            self._reserved[slot] = self._reserved.get(slot, 0.0) + estimate
        if len(self._spent) + len(self._reserved) > _PRUNE_AT:
            self._prune(now)
        return hold

    def release(self, hold: Hold) -> None:
        """Drop a request's reservation (it finished or failed)."""
        for slot in hold.slots:
            left = self._reserved.get(slot, 0.0) - hold.amount
            if left > EPSILON:
                self._reserved[slot] = left
            else:
                self._reserved.pop(slot, None)
        hold.slots = []

    def account(self, caller: Caller, cost: float, now: float) -> list[Limit]:
        """Add a recorded request's dollars to its budgets; the ones now past 80% that
        have not warned this period are returned. Called right before the row is written,
        in the same step, so a concurrent first load cannot count it twice or miss it."""
        if not self.active:
            return []
        crossed: list[Limit] = []
        exempt = self.exempt(caller)
        for limit in self.limits(caller, now):
            slot = limit.slot
            if slot in self._spent:
                self._spent[slot] += cost
                if (not exempt and slot not in self._warned
                        and self._spent[slot] >= WARN_AT * limit.amount - EPSILON):
                    self._warned.add(slot)
                    crossed.append(limit)
            else:
                self._missed[slot] = self._missed.get(slot, 0) + 1
        return crossed

    async def warnings(self, crossed: list[Limit], now: float) -> list[str]:
        """The 80% notices to give: each budget warns once per period (kept in SQLite)."""
        notes: list[str] = []
        for limit in crossed:
            if self.store is not None and not await self.store.claim_budget_warning(*limit.slot):
                continue
            spent = self._spent.get(limit.slot, 0.0)
            log.info("budget: %s %s budget of %s passed %d%%: %s of %s", limit.scope,
                     limit.name(), limit.key, round(WARN_AT * 100), usd(spent),
                     usd(limit.amount))
            owner = limit.owner()
            notes.append(f"⚠️ {owner[0].upper()}{owner[1:]} {limit.name()} budget is "
                         f"{min(100, round(100 * spent / limit.amount))}% used: {usd(spent)} "
                         f"of {usd(limit.amount)}. It resets "
                         f"{self.calendar.resets(limit.period, now)}.")
        return notes

    def refusal(self, limit: Limit, used: float, now: float) -> str:
        """The one short reply to a refused request: which budget, how much, when it resets."""
        return (f"⛔ This would go over {limit.owner()} {limit.name()} budget: {usd(used)} of "
                f"{usd(limit.amount)} used. It resets "
                f"{self.calendar.resets(limit.period, now)}.")

    async def standing(self, caller: Caller, now: float) -> list[Standing]:
        """Every budget that applies to a caller, with what is spent and reserved."""
        return [Standing(limit, await self.spent(limit), self._reserved.get(limit.slot, 0.0))
                for limit in self.limits(caller, now)]

    async def set_override(self, scope: str, key: str, period: str, amount: float | None,
                           set_by: str | None = None) -> None:
        """Set (amount, 0 = unlimited) or remove (None) a per-user or per-chat budget."""
        if self.store is not None:
            await self.store.set_budget_override(scope, key, period, amount, set_by)
        if amount is None:
            self.overrides.pop((scope, key, period), None)
        else:
            self.overrides[(scope, key, period)] = amount

    def _prune(self, now: float) -> None:
        current = {self.calendar.period(kind, now).key for kind in PERIODS}
        for table in (self._spent, self._missed):
            for slot in [s for s in table if s[2] not in current]:
                del table[slot]
        self._warned = {s for s in self._warned if s[2] in current}
