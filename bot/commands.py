"""Commands are declared once (CommandSpec) and every adapter renders and parses them.

A command takes typed params (`/model NAME`) or subcommands, each with typed params of
its own (`/voice speed 1.5`). Discord renders the declaration natively (options, choices,
subcommands); Telegram and the console show `usage()` text, and typed text is parsed here
the same way on every platform, so `/voice speed 1.5` means one thing everywhere. On text
platforms a command with subcommands may also be sent bare (`/voice`): `sub` is then None.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from bot.errors import UserError
from bot.events import CommandCall
from bot.replies import Capabilities

if TYPE_CHECKING:
    from bot.context import Context

ParamType = Literal["str", "text", "int", "float", "attachment"]
Handler = Callable[["Context"], Awaitable[None]]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]+))?(?:\s+|$)(.*)$", re.S)
_INLINE_CHOICES = 4  # usage text spells out at most this many choices


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class Param:
    """One typed argument. `text` takes the rest of the line; `attachment` is a file."""

    name: str
    description: str
    type: ParamType = "str"
    required: bool = False
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    choices_from: str = ""  # dotted config path the choices come from, e.g. "voice.voices"

    def coerce(self, value: Any) -> Any:
        """Check and convert one raw value; the error text names what is valid."""
        if self.type in ("int", "float"):
            return self._number(value)
        text = str(value).strip()
        if self.choices:
            folded = {c.lower(): c for c in self.choices}
            if text.lower() not in folded:
                raise UserError(f"`{self.name}` must be one of: {', '.join(self.choices)}.")
            return folded[text.lower()]
        return text

    def _number(self, value: Any) -> int | float:
        try:
            number: int | float = int(value) if self.type == "int" else float(value)
        except (TypeError, ValueError):
            kind = "a whole number" if self.type == "int" else "a number"
            raise UserError(f"`{self.name}` must be {kind}{self._range_hint()}.") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise UserError(f"`{self.name}` must be a number{self._range_hint()}.")
        low, high = self.min_value, self.max_value
        if low is not None and high is not None and not low <= number <= high:
            raise UserError(f"`{self.name}` must be between {_number(low)} and "
                            f"{_number(high)}.")
        if low is not None and number < low:
            raise UserError(f"`{self.name}` must be at least {_number(low)}.")
        if high is not None and number > high:
            raise UserError(f"`{self.name}` must be at most {_number(high)}.")
        return number

    def _range_hint(self) -> str:
        if self.min_value is not None and self.max_value is not None:
            return f" from {_number(self.min_value)} to {_number(self.max_value)}"
        return ""

    def label(self, named: bool = True) -> str:
        """How usage text shows this param: `<a|b>`, `[count 1-4]`, `[name]`; `named=False`
        leaves out a name the words before it already say (`/voice speed <0.25-4>`)."""
        if self.choices and len(self.choices) <= _INLINE_CHOICES:
            inner = "|".join(self.choices)
        elif self.type in ("int", "float") and None not in (self.min_value, self.max_value):
            span = f"{_number(self.min_value)}-{_number(self.max_value)}"  # type: ignore[arg-type]
            inner = f"{self.name} {span}" if named else span
        else:
            inner = self.name
        return f"<{inner}>" if self.required else f"[{inner}]"


def _parse_params(params: tuple[Param, ...], rest: str, usage: str) -> dict[str, Any]:
    """Words in order; a `text` param (or a last free `str`) takes the rest of the line."""
    args: dict[str, Any] = {}
    remaining = rest.strip()
    positional = [p for p in params if p.type != "attachment"]
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
        raise UserError(f"Too many arguments. Usage: `{usage}`")
    return args


def _check_params(params: tuple[Param, ...], args: dict[str, Any], usage: str) -> dict[str, Any]:
    """Validate typed args (parsed text or Discord options); report missing required ones."""
    known = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name not in known:
            raise UserError(f"Unknown option `{name}`. Usage: `{usage}`")
        if value is None or value == "":
            continue
        out[name] = value if known[name].type == "attachment" else known[name].coerce(value)
    for p in params:
        if p.required and p.name not in out and p.type != "attachment":
            raise UserError(f"Missing `{p.name}`. Usage: `{usage}`")
    return out


def _usage(words: str, params: tuple[Param, ...]) -> str:
    last = words.rsplit(" ", 1)[-1]
    return " ".join([words, *(p.label(named=p.name != last) for p in params
                              if p.type != "attachment")])


@dataclass(frozen=True, slots=True)
class Subcommand:
    """One action of a command (`/voice speed N`), with typed params of its own."""

    name: str
    description: str
    params: tuple[Param, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The one declaration of a command: name, user-visible description, params, rules."""

    name: str
    description: str
    params: tuple[Param, ...] = ()
    handler: Handler | None = field(default=None, compare=False, repr=False)
    admin_in_groups: bool = False
    requires: str = ""  # a Capabilities flag the platform must have (e.g. "start_command")
    hidden: bool = False
    subcommands: tuple[Subcommand, ...] = ()
    # handled on arrival, not queued behind the channel's message in progress (/cancel)
    immediate: bool = False

    def usage(self) -> str:
        """One line for help texts: `/name <required> [optional]` or `/name a|b|c`."""
        if self.subcommands:
            return f"/{self.name} " + "|".join(s.name for s in self.subcommands)
        return _usage(f"/{self.name}", self.params)

    def sub_usage(self, sub: Subcommand) -> str:
        """`/voice speed <0.25-4>`."""
        return _usage(f"/{self.name} {sub.name}", sub.params)

    def usage_text(self) -> str:
        """Every form of the command, one per line (Telegram and console help)."""
        if not self.subcommands:
            return f"`{self.usage()}`"
        return "\n".join(f"`{self.sub_usage(s)}` — {s.description}" for s in self.subcommands)

    def subcommand(self, name: str) -> Subcommand | None:
        """The subcommand called `name` (any case), if there is one."""
        return next((s for s in self.subcommands if s.name == name.lower()), None)

    def available_on(self, capabilities: Capabilities) -> bool:
        """Some commands exist only where the platform has a feature (/start: start_command)."""
        return not self.requires or bool(getattr(capabilities, self.requires))

    def parse_text(self, rest: str) -> tuple[str | None, dict[str, Any]]:
        """(subcommand, typed args) from the text after `/name`."""
        if not self.subcommands:
            return None, self.check(_parse_params(self.params, rest, self.usage()))
        word, _, tail = rest.strip().partition(" ")
        if not word:
            return None, {}
        sub = self.subcommand(word)
        if sub is None:
            raise UserError(f"`/{self.name}` has no option `{word[:40]}`. Usage:\n"
                            f"{self.usage_text()}")
        return sub.name, self.check(_parse_params(sub.params, tail, self.sub_usage(sub)),
                                    sub.name)

    def check(self, args: dict[str, Any], sub: str | None = None) -> dict[str, Any]:
        """Validate typed args (e.g. from Discord options) of the command or a subcommand."""
        if sub is None:
            return _check_params(self.params, args, self.usage())
        found = self.subcommand(sub)
        if found is None:
            raise UserError(f"`/{self.name}` has no option `{sub}`.")
        return _check_params(found.params, args, self.sub_usage(found))

    def all_params(self) -> tuple[Param, ...]:
        """The command's params and every subcommand's."""
        return self.params + tuple(p for s in self.subcommands for p in s.params)


def command(
    name: str,
    *parts: Param | Subcommand,
    admin_in_groups: bool = False,
    requires: str = "",
    hidden: bool = False,
    immediate: bool = False,
) -> Callable[[Handler], Handler]:
    """Attach a CommandSpec to a handler; the docstring's first line is its description.

    `parts` are either params or subcommands, not both (Discord allows no mix either).
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid command name {name!r}")
    if requires and requires not in Capabilities.__dataclass_fields__:
        raise ValueError(f"/{name} requires an unknown capability {requires!r}")
    params = tuple(p for p in parts if isinstance(p, Param))
    subs = tuple(p for p in parts if isinstance(p, Subcommand))
    if params and subs:
        raise ValueError(f"/{name} mixes params and subcommands")
    names = [s.name for s in subs] + [p.name for p in params]
    if len(set(names)) != len(names) or not all(_NAME_RE.match(n) for n in names):
        raise ValueError(f"/{name}: invalid or repeated option names {names}")

    def wrap(fn: Handler) -> Handler:
        doc = (fn.__doc__ or name).strip().splitlines()[0].strip()
        spec = CommandSpec(
            name=name,
            description=doc,
            params=params,
            handler=fn,
            admin_in_groups=admin_in_groups,
            requires=requires,
            hidden=hidden,
            subcommands=subs,
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


def _resolve(params: tuple[Param, ...], config: object) -> tuple[Param, ...]:
    out = []
    for p in params:
        if p.choices_from:
            value: Any = config
            for part in p.choices_from.split("."):
                value = getattr(value, part)
            p = replace(p, choices=tuple(str(v) for v in value))
        out.append(p)
    return tuple(out)


def resolve_choices(spec: CommandSpec, config: object) -> CommandSpec:
    """Fill params whose choices come from config (e.g. /model from [models] choices)."""
    if not any(p.choices_from for p in spec.all_params()):
        return spec
    subs = tuple(replace(s, params=_resolve(s.params, config)) for s in spec.subcommands)
    return replace(spec, params=_resolve(spec.params, config), subcommands=subs)


class CommandTable:
    """The registered commands by name; adapters render it, the router dispatches on it."""

    def __init__(self, specs: list[CommandSpec], config: object | None = None) -> None:
        if config is not None:
            specs = [resolve_choices(s, config) for s in specs]
        self.specs = specs
        self.by_name = {s.name: s for s in specs}

    def for_platform(self, capabilities: Capabilities) -> list[CommandSpec]:
        """Commands shown on a platform with these capabilities, in registry order."""
        return [s for s in self.specs if s.available_on(capabilities) and not s.hidden]

    def parse(
        self, text: str, capabilities: Capabilities, bot_username: str | None = None
    ) -> CommandCall | None:
        """Parse a typed command: None when not one; unknown names come back marked."""
        split = split_command(text, bot_username)
        if split is None:
            return None
        name, rest = split
        spec = self.by_name.get(name)
        if spec is None or not spec.available_on(capabilities):
            return CommandCall(name=name, args={}, raw=rest, unknown=True)
        try:
            sub, args = spec.parse_text(rest)
        except UserError as e:
            return CommandCall(name=name, args={}, raw=rest, error=e.message)
        return CommandCall(name=name, args=args, raw=rest, sub=sub)
