"""/usage (spend by feature, a 30-day chart, admin reports and CSV export) and /budget.

Reports read the daily rollup (usage_daily), never the raw rows, so they cost the same
with ten rows or ten million; only the admin's CSV export reads raw rows, for a range.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from datetime import date, datetime, timedelta

from bot import chart
from bot.budgets import Standing, usd
from bot.commands import Param, command
from bot.context import Context
from bot.errors import UserError
from bot.replies import OutFile
from bot.store import UsageSum
from bot.usage import FEATURE_LABELS, FEATURES, Caller, current_caller

log = logging.getLogger(__name__)

CHART_DAYS = 30
TOP = 10
EXPORT_ROWS = 100_000
ADMINS_ONLY = "Only bot admins can use `/usage {what}`."
BUDGET_ADMINS_ONLY = "Only bot admins can change budgets."
BUDGET_USAGE = ("Usage: `/budget` shows your budgets; admins: "
                "`/budget set user|chat ID day|month AMOUNT` (US dollars, 0 = unlimited) and "
                "`/budget reset user|chat ID [day|month]`. ID is `platform:id`, an id on this "
                "platform, `me` or `here`.")
EXPORT_COLUMNS = ("created", "day", "platform", "chat", "channel", "user_id", "feature",
                  "model", "input_tokens", "cached_tokens", "output_tokens", "units", "unit",
                  "cost_usd", "estimated")


def _tokens(s: UsageSum) -> int:
    return s.input_tokens + s.output_tokens


def _line(label: str, s: UsageSum) -> str:
    """`chat: 3 requests, 1,234 tokens, $0.0123` with unknown prices and estimates noted."""
    requests = f"{s.requests:,} request{'s' if s.requests != 1 else ''}"
    cost = usd(s.cost)
    if s.unpriced:
        cost = ("price unknown" if s.unpriced == s.requests else
                f"{cost} + price unknown for {s.unpriced:,}")
    text = f"{label}: {requests}, {_tokens(s):,} tokens, {cost}"
    if s.estimated:
        text += f" ({s.estimated:,} estimated)"
    return text


def _add(sums: list[UsageSum], key: str) -> UsageSum:
    """Several sums as one."""
    return UsageSum(key, sum(s.requests for s in sums), sum(s.input_tokens for s in sums),
                    sum(s.cached_tokens for s in sums), sum(s.output_tokens for s in sums),
                    sum(s.units for s in sums), sum(s.cost for s in sums),
                    sum(s.unpriced for s in sums), sum(s.estimated for s in sums))


def _section(title: str, rows: list[UsageSum]) -> list[str]:
    """A titled block: the total, then one line per feature in the fixed feature order."""
    by_feature: dict[str, list[UsageSum]] = {}
    for r in rows:
        by_feature.setdefault(r.key.split(" ", 1)[1], []).append(r)
    if not by_feature:
        return [f"**{title}**: nothing yet."]
    total = _add(rows, "total")
    lines = [f"**{title}**: {usd(total.cost)}" + (
        f" (+ {total.unpriced:,} requests with unknown prices)" if total.unpriced else "")]
    order = [f for f in FEATURES if f in by_feature] + sorted(set(by_feature) - set(FEATURES))
    for feature in order:
        lines.append("• " + _line(FEATURE_LABELS.get(feature, feature),
                                  _add(by_feature[feature], feature)))
    return lines


async def usage_report(ctx: Context, caller: Caller) -> tuple[str, bytes]:
    """The caller's (DM) or the chat's (group) spend today and this month by feature, and
    the 30-day chart as PNG bytes."""
    meter = ctx.ai.meter
    now = meter.clock()
    calendar = meter.calendar
    days = calendar.days(now, CHART_DAYS)
    month = calendar.period("month", now)
    first = min(days[0], month.first_day)
    if caller.private:
        assert caller.user_id is not None
        rows = await ctx.store.usage_sums(first, days[-1], "day_feature",
                                          user=(caller.platform, caller.user_id))
        who, title = "Your usage", "Your spend per day, last 30 days"
    else:
        rows = await ctx.store.usage_sums(first, days[-1], "day_feature", chat=caller.chat)
        who, title = "This chat's usage", "This chat's spend per day, last 30 days"
    today = days[-1]
    lines = [f"**{who}** (days in {calendar.name}; prices of {meter.prices.date})", ""]
    lines += _section("Today", [r for r in rows if r.key.startswith(today)])
    lines.append("")
    lines += _section("This month", [r for r in rows if r.key[:10] >= month.first_day])
    shown = [r for r in rows if r.key[:10] >= days[0]]
    dollars = any(r.cost > 0 for r in shown) or not shown
    index = {d: i for i, d in enumerate(days)}
    values: dict[str, list[float]] = {f: [0.0] * len(days) for f in FEATURES}
    for r in shown:
        day, feature = r.key.split(" ", 1)
        series = values.setdefault(feature, [0.0] * len(days))
        series[index[day]] += r.cost if dollars else r.requests
    series = [chart.Series(f, FEATURE_LABELS.get(f, f), v) for f, v in values.items()]
    png = chart.render(days, series, title=title, dollars=dollars, timezone=calendar.name)
    return "\n".join(lines), png


async def admin_report(ctx: Context) -> str:
    """This month across the bot: totals, top users, top chats, per model."""
    meter = ctx.ai.meter
    now = meter.clock()
    month = meter.calendar.period("month", now)
    today = meter.calendar.day_of(now)
    first, last = month.first_day, month.last_day
    total_today = _add(await ctx.store.usage_sums(today, today, "feature"), "today")
    total_month = _add(await ctx.store.usage_sums(first, last, "feature"), "month")
    users = await ctx.store.usage_sums(first, last, "user", limit=TOP)
    chats = await ctx.store.usage_sums(first, last, "chat", limit=TOP)
    models = await ctx.store.usage_sums(first, last, "model", limit=50)
    lines = [f"**Usage of the whole bot** (days in {meter.calendar.name})",
             "• " + _line("Today", total_today), "• " + _line("This month", total_month), ""]
    for title, rows in (("Top users this month", users), ("Top chats this month", chats),
                        ("Per model this month", models)):
        lines.append(f"**{title}**")
        lines += [f"{i}. " + _line(f"`{r.key}`", r) for i, r in enumerate(rows, 1)] or [
            "nothing yet."]
        lines.append("")
    return "\n".join(lines).strip()


def _parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"`{what}` must be a date like 2026-11-30.") from None


async def export_csv(ctx: Context, start: str | None, end: str | None) -> tuple[OutFile, str]:
    """A CSV document of the raw usage rows of a date range (default: this month)."""
    meter = ctx.ai.meter
    now = meter.clock()
    calendar = meter.calendar
    month = calendar.period("month", now)
    first = _parse_day(start, "from") if start else month.start.date()
    last = _parse_day(end, "to") if end else date.fromisoformat(calendar.day_of(now))
    if last < first:
        raise UserError("The export range ends before it starts.")
    since = datetime.combine(first, datetime.min.time(), tzinfo=calendar.tz).timestamp()
    until = datetime.combine(last + timedelta(days=1), datetime.min.time(),
                             tzinfo=calendar.tz).timestamp()
    rows = await ctx.store.usage_between(since, until, EXPORT_ROWS + 1)
    cut = len(rows) > EXPORT_ROWS
    rows = rows[:EXPORT_ROWS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    limit = ctx.reply.capabilities.max_upload - 1024
    written = 0
    for r in rows:
        if buf.tell() > limit:
            cut = True
            break
        created = datetime.fromtimestamp(r.created, calendar.tz).isoformat(timespec="seconds")
        writer.writerow((created, r.day, r.platform, r.chat, r.channel, r.user_id or "",
                         r.feature, r.model, r.prompt_tokens, r.cached_tokens,
                         r.completion_tokens, f"{r.units:g}", r.unit,
                         "" if r.cost is None else f"{r.cost:.8f}", int(r.estimated)))
        written += 1
    name = f"usage-{first.isoformat()}-to-{last.isoformat()}.csv"
    note = f"{written:,} usage rows from {first.isoformat()} to {last.isoformat()}."
    if cut:
        note += " The export was cut there (too large): ask for a shorter range."
    log.info("usage export %s..%s: %d rows%s", first, last, written, " (cut)" if cut else "")
    return OutFile(buf.getvalue().encode("utf-8"), name, "text/csv", kind="document",
                   caption=note), note


@command(
    "usage",
    Param("scope", "all: the whole bot; export: a CSV of the raw rows (admins)",
          choices=("all", "export")),
    Param("from", "First day of the export, YYYY-MM-DD (default: start of this month)"),
    Param("to", "Last day of the export, YYYY-MM-DD (default: today)"),
)
async def usage_cmd(ctx: Context) -> None:
    """What you (or this chat) spent today and this month, with a 30-day chart"""
    scope = str(ctx.args.get("scope", ""))
    if scope in ("all", "export") and not ctx.is_admin():
        raise UserError(ADMINS_ONLY.format(what=scope))
    if scope == "all":
        await ctx.reply.reply_long(await admin_report(ctx))
        return
    if scope == "export":
        async with ctx.reply.working("upload_document"):
            file, _ = await export_csv(ctx, ctx.args.get("from"), ctx.args.get("to"))
            await ctx.reply.send_file(file)
        return
    if ctx.args.get("from") or ctx.args.get("to"):
        raise UserError("Dates go with `/usage export FROM TO`.")
    text, png = await usage_report(ctx, current_caller())
    await ctx.reply.reply_long(text)
    await ctx.reply.send_file(OutFile(png, "usage.png", "image/png", kind="image"))


# --------------------------------------------------------------------------- /budget


def _standing_line(s: Standing, resets: str) -> str:
    limit = s.limit
    owner = limit.owner()
    name = f"{owner[0].upper()}{owner[1:]} {limit.name()} budget"
    if limit.overridden:
        name += " (set by an admin)"
    text = (f"• {name}: {usd(s.spent)} of {usd(limit.amount)} used, {usd(s.left)} left. "
            f"Resets {resets}.")
    if s.reserved > 0:
        text += f" ({usd(s.reserved)} held for requests in progress.)"
    return text


def _target(ctx: Context, scope: str, ident: str) -> str:
    """`platform:id` of a user or chat named as `platform:id`, a bare id, `me` or `here`."""
    caller = current_caller()
    ident = ident.strip()
    if ident.lower() in ("me", "here"):
        return caller.user_key if scope == "user" else caller.chat
    if not ident or any(c.isspace() for c in ident) or len(ident) > 100:
        raise UserError(BUDGET_USAGE)
    return ident if ":" in ident else f"{caller.platform}:{ident}"


def _amount(text: str) -> float:
    try:
        value = float(text.strip().lstrip("$").replace(",", ""))
    except ValueError:
        raise UserError("The amount must be a number of US dollars, e.g. `2.50`.") from None
    if not math.isfinite(value) or value < 0 or value > 1_000_000:
        raise UserError("The amount must be between 0 (unlimited) and 1,000,000 dollars.")
    return round(value, 6)


@command(
    "budget",
    Param("action", "set or reset a budget (admins)", choices=("set", "reset")),
    Param("scope", "Whose budget", choices=("user", "chat")),
    Param("id", "platform:id, an id on this platform, me or here"),
    Param("period", "Which budget", choices=("day", "month")),
    Param("amount", "US dollars (0 = unlimited)"),
)
async def budget_cmd(ctx: Context) -> None:
    """Your budgets and what is left; admins set or reset them"""
    args = ctx.args
    action = str(args.get("action", ""))
    budgets = ctx.ai.meter.budgets
    now = ctx.ai.meter.clock()
    if not action:
        await ctx.reply.reply_long(await _show(ctx, now))
        return
    if not ctx.is_admin():
        raise UserError(BUDGET_ADMINS_ONLY)
    scope = str(args.get("scope", ""))
    if not scope or not args.get("id"):
        raise UserError(BUDGET_USAGE)
    key = _target(ctx, scope, str(args["id"]))
    period = str(args.get("period", ""))
    who = f"{scope} `{key}`"
    admin = current_caller().user_key
    if action == "set":
        if not period or not args.get("amount"):
            raise UserError(BUDGET_USAGE)
        amount = _amount(str(args["amount"]))
        await budgets.set_override(scope, key, period, amount, admin)
        log.info("budget: %s set %s %s %s to %s", admin, scope, key, period, amount)
        shown = "unlimited" if amount == 0 else usd(amount)
        await ctx.reply.reply_long(f"The {'daily' if period == 'day' else 'monthly'} budget of "
                                   f"{who} is now {shown}.")
        return
    periods = [period] if period else ["day", "month"]
    for p in periods:
        await budgets.set_override(scope, key, p, None, admin)
    log.info("budget: %s reset %s %s %s", admin, scope, key, "+".join(periods))
    names = " and ".join("daily" if p == "day" else "monthly" for p in periods)
    await ctx.reply.reply_long(f"The {names} budget of {who} follows the config again.")


async def _show(ctx: Context, now: float) -> str:
    budgets = ctx.ai.meter.budgets
    caller = current_caller()
    standing = await budgets.standing(caller, now)
    calendar = budgets.calendar
    lines = [f"**Budgets that apply to you here** (days and months in {calendar.name})"]
    if budgets.exempt(caller):
        lines.append("You are an admin: budgets never stop your requests "
                     "(`[budgets] admins_exempt`).")
    if not standing:
        lines.append("None: usage is not limited.")
    for s in standing:
        lines.append(_standing_line(s, calendar.resets(s.limit.period, now)))
    if ctx.is_admin() and budgets.overrides:
        lines += ["", "**Budgets set by admins**"]
        for (scope, key, period), amount in sorted(budgets.overrides.items()):
            shown = "unlimited" if amount == 0 else usd(amount)
            lines.append(f"• {scope} `{key}`, {'daily' if period == 'day' else 'monthly'}: "
                         f"{shown}")
    return "\n".join(lines)
