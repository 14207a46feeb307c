"""Commands are declared once (CommandSpec) and every adapter renders and parses them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from bot.errors import UserError

if TYPE_CHECKING:
    from bot.context import Context

ParamType = Literal["str", "text", "int", "attachment"]
Handler = Callable[["Context"], Awaitable[None]]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]+))?(?:\s+|$)(.*)$", re.S)


@dataclass(frozen=True, slots=True)
class Param:
    """One typed argument. `text` takes the rest of the line; `attachment` is a file."""

    name: str
    description: str
    type: ParamType = "str"
    required: bool = False
    choices: tuple[str, ...] = ()
    min_value: int | None = None
    max_value: int | None = None
    choices_from: str = ""

    def coerce(self, value: Any) -> Any:
        """Check and convert one raw value; the error text names the valid choices."""
        if self.type == "int":
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise UserError(f"`{self.name}` must be a whole number.") from None
            if self.min_value is not None and number < self.min_value:
                raise UserError(f"`{self.name}` must be at least {self.min_value}.")
            if self.max_value is not None and number > self.max_value:
                raise UserError(f"`{self.name}` must be at most {self.max_value}.")
            return number
        text = str(value).strip()
        if self.choices and text not in self.choices:
            raise UserError(f"`{self.name}` must be one of: {', '.join(self.choices)}.")
        return text


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The one declaration of a command: name, user-visible description, params, rules."""

    name: str
    description: str
    params: tuple[Param, ...] = ()
    handler: Handler | None = field(default=None, compare=False, repr=False)
    admin_in_groups: bool = False
    platforms: tuple[str, ...] = ()
    hidden: bool = False
    # handled on arrival, not queued behind the channel's message in progress (/cancel)
    immediate: bool = False

    def usage(self) -> str:
        """`/name <required> [optional]` for help texts and error replies."""
        parts = [f"/{self.name}"]
        for p in self.params:
            if p.type == "attachment":
                continue
            label = "|".join(p.choices) if p.choices and len(p.choices) <= 4 else p.name
            parts.append(f"<{label}>" if p.required else f"[{label}]")
        return " ".join(parts)

    def available_on(self, platform: str) -> bool:
        """Some commands (Telegram's /start) exist on one platform only."""
        return not self.platforms or platform in self.platforms

    def parse_text(self, rest: str) -> dict[str, Any]:
        """Parse the text after `/name` into typed args: words in order, `text` takes the rest."""
        args: dict[str, Any] = {}
        remaining = rest.strip()
        positional = [p for p in self.params if p.type != "attachment"]
        for i, p in enumerate(positional):
            if not remaining:
                break
            last = i == len(positional) - 1
            if p.type == "text" or (last and p.type == "str" and not p.choices):
                args[p.name] = p.coerce(remaining)
                remaining = ""
                break
            word, _, remaining = remaining.partition(" ")
            remaining = remaining.strip()
            args[p.name] = p.coerce(word)
        if remaining:
            raise UserError(f"Too many arguments. Usage: `{self.usage()}`")
        return self.check(args)

    def check(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate typed args (e.g. from Discord options) and report missing required ones."""
        known = {p.name: p for p in self.params}
        out: dict[str, Any] = {}
        for name, value in args.items():
            if name not in known:
                raise UserError(f"Unknown option `{name}`. Usage: `{self.usage()}`")
            if value is None or value == "":
                continue
            out[name] = value if known[name].type == "attachment" else known[name].coerce(value)
        for p in self.params:
            if p.required and p.name not in out and p.type != "attachment":
                raise UserError(f"Missing `{p.name}`. Usage: `{self.usage()}`")
        return out


def command(
    name: str,
    *params: Param,
    admin_in_groups: bool = False,
    platforms: tuple[str, ...] = (),
    hidden: bool = False,
    immediate: bool = False,
) -> Callable[[Handler], Handler]:
    """Attach a CommandSpec to a handler; the docstring's first line is its description."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid command name {name!r}")

    def wrap(fn: Handler) -> Handler:
        doc = (fn.__doc__ or name).strip().splitlines()[0].strip()
        spec = CommandSpec(
            name=name,
            description=doc[:100],
            params=tuple(params),
            handler=fn,
            admin_in_groups=admin_in_groups,
            platforms=platforms,
            hidden=hidden,
            immediate=immediate,
        )
        fn.spec = spec  # type: ignore[attr-defined]
        return fn

    return wrap


def spec_of(fn: Handler) -> CommandSpec:
    """The CommandSpec recorded by @command."""
    return fn.spec  # type: ignore[attr-defined,no-any-return]


def split_command(text: str, bot_username: str | None = None) -> tuple[str, str] | None:
    """`/name@bot rest` -> (name, rest); None when not a command or addressed to another bot."""
    m = _COMMAND_RE.match(text.strip())
    if not m:
        return None
    name, target, rest = m.group(1).lower(), m.group(2), m.group(3)
    if target and bot_username and target.lower() != bot_username.lower():
        return None
    return name, rest


def resolve_choices(spec: CommandSpec, config: object) -> CommandSpec:
    """Fill params whose choices come from config (e.g. /model from [models] choices)."""
    if not any(p.choices_from for p in spec.params):
        return spec
    params = []
    for p in spec.params:
        if p.choices_from:
            value: Any = config
            for part in p.choices_from.split("."):
                value = getattr(value, part)
            p = replace(p, choices=tuple(str(v) for v in value)[:25])
        params.append(p)
    return replace(spec, params=tuple(params))


class CommandTable:
    """The registered commands by name; adapters render it, the router dispatches on it."""

    def __init__(self, specs: list[CommandSpec], config: object | None = None) -> None:
        if config is not None:
            specs = [resolve_choices(s, config) for s in specs]
        self.specs = specs
        self.by_name = {s.name: s for s in specs}

    def for_platform(self, platform: str) -> list[CommandSpec]:
        """Commands shown on one platform, in registry order."""
        return [s for s in self.specs if s.available_on(platform) and not s.hidden]

    def parse(
        self, text: str, platform: str, bot_username: str | None = None
    ) -> CommandCall | None:
        """Parse a typed command: None when not one; unknown names come back marked."""
        split = split_command(text, bot_username)
        if split is None:
            return None
        name, rest = split
        spec = self.by_name.get(name)
        if spec is None or not spec.available_on(platform):
            return CommandCall(name=name, args={}, raw=rest, unknown=True)
        try:
            return CommandCall(name=name, args=spec.parse_text(rest), raw=rest)
        except UserError as e:
            return CommandCall(name=name, args={}, raw=rest, error=e.message)


@dataclass(frozen=True, slots=True)
class CommandCall:
    """A parsed command call; `unknown` marks a /word matching no command, `error` bad args."""

    name: str
    args: dict[str, Any]
    raw: str = ""
    unknown: bool = False
    error: str | None = None
