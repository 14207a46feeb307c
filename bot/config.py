"""config.toml + environment secrets -> frozen typed settings; a bad key stops start-up."""

from __future__ import annotations

import os
import re
import tomllib
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A missing or invalid setting; printed as one line, exit code 2."""


DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a chat app. Answer concisely in the user's language. "
    "In group chats, messages are prefixed with the speaker's name."
)


@dataclass(frozen=True, slots=True)
class BotSection:
    """Behaviour shared by all platforms."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    group_trigger: str = "mention"
    record_unaddressed: bool = True
    log_level: str = "INFO"
    # after a crash, unanswered messages younger than this are answered (0: none are)
    resume_minutes: int = 10


@dataclass(frozen=True, slots=True)
class OpenAISection:
    """How to reach the model service (the key and URL come from the environment)."""

    timeout: float = 60.0
    max_retries: int = 2
    organization: str = ""
    length_param: str = "auto"
    connection_pools: int = 8


@dataclass(frozen=True, slots=True)
class ModelsSection:
    """One model per task; defaults are current models the openai library does not deprecate."""

    chat: str = "gpt-5.4-mini"
    vision: str = "gpt-5.4-mini"
    image: str = "gpt-image-2"
    transcribe: str = "gpt-transcribe"
    tts: str = "gpt-4o-mini-tts"
    embedding: str = "text-embedding-3-small"
    choices: tuple[str, ...] = ("gpt-5.4-mini", "gpt-5.5", "gpt-5.4")


@dataclass(frozen=True, slots=True)
class ChatSection:
    """Context assembly and answer length."""

    history_tokens: int = 6000
    max_output_tokens: int = 2000
    history_messages: int = 200
    tokenizer: str = "auto"
    context_window: int = 0


@dataclass(frozen=True, slots=True)
class VisionSection:
    """Image understanding: detail level, limits, how many images stay in context."""

    detail: str = "auto"
    max_image_mb: int = 20
    keep_images: int = 8
    context_images: int = 4
    accepts_images: str = "auto"


@dataclass(frozen=True, slots=True)
class ImagesSection:
    """Image generation defaults (/draw, /edit, /variation)."""

    size: str = "auto"
    quality: str = "auto"
    max_count: int = 4


@dataclass(frozen=True, slots=True)
class VoiceSection:
    """Speech to text and text to speech."""

    reply_voice: str = "auto"
    show_transcript: str = "quote"
    voice: str = "alloy"
    voices: tuple[str, ...] = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova",
                               "onyx", "sage", "shimmer", "verse", "marin", "cedar")
    speed: float = 1.0
    instructions: str = ""
    max_audio_minutes: int = 30
    chunk_minutes: int = 10
    translate_model: str = "whisper-1"


DEFAULT_FILE_TYPES = (
    "csv", "tsv", "xlsx", "xls", "json", "jsonl", "txt", "md", "pdf", "docx", "pptx", "html",
    "xml", "yaml", "yml", "tex", "log", "py", "js", "ts", "java", "c", "cpp", "h", "cs",
    "go", "rb", "php", "sh", "sql", "css", "rs", "kt", "swift", "r", "ipynb", "zip",
)


@dataclass(frozen=True, slots=True)
class AssistantSection:
    """Files, code interpreter and file search: one workspace and conversation per chat."""

    backend: str = "responses"
    model: str = ""
    run_timeout: float = 300.0
    max_file_mb: int = 20
    allowed_types: tuple[str, ...] = DEFAULT_FILE_TYPES
    file_ttl_days: int = 30
    cjk_font: str = "auto"
    container_minutes: int = 20
TOOL_NAMES = ("current_time", "calculate", "draw", "remember", "recall", "fetch_url")


@dataclass(frozen=True, slots=True)
class ToolsSection:
    """Function calling: which built-in tools the model may use, and their limits."""

    enabled: tuple[str, ...] = ("current_time", "calculate", "draw", "remember", "recall")
    timeout: float = 20.0
    max_rounds: int = 5
    # fetch_url limits; allow_loopback exists for tests against a local server only
    fetch_max_mb: float = 2.0
    fetch_timeout: float = 10.0
    fetch_allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class MemorySection:
    """Semantic memory: stored messages embedded in the background, recalled by similarity."""

    enabled: bool = True
    recall_k: int = 4
    dimensions: int = 512
    batch_size: int = 64
    recall_timeout: float = 1.5
    search_results: int = 5


@dataclass(frozen=True, slots=True)
class AccessSection:
    """Who may use the bot; empty lists mean everyone. Ids are platform:id or bare ids."""

    allowed_users: tuple[str, ...] = ()
    allowed_chats: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class StorageSection:
    """Where the database lives: a PostgreSQL URL, or the SQLite file (env overrides)."""

    url: str = ""  # postgresql://..., sqlite:///path or a path; empty: `path`
    path: str = "bot.sqlite3"


@dataclass(frozen=True, slots=True)
class TelegramSection:
    """Telegram specifics (the token and API root come from the environment)."""

    poll_timeout: int = 30
    album_wait: float = 0.8
    webhook_url: str = ""  # empty: long polling
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8443
    webhook_secret: str = ""
    global_rate: float = 30.0  # new messages per second, this process's share; 0: off


@dataclass(frozen=True, slots=True)
class DiscordSection:
    """Discord specifics (the token comes from the environment)."""

    sync_commands: bool = True
    shard_count: int | str = 0  # 0: unsharded; "auto": Discord's recommendation
    shard_ids: tuple[int, ...] = ()  # empty: every shard of shard_count


@dataclass(frozen=True, slots=True)
class UsageSection:
    """Cost accounting: an owner's price file on top of the shipped bot/prices.toml."""

    prices: str = ""


@dataclass(frozen=True, slots=True)
class BudgetsSection:
    """Spending limits in US dollars (0 = unlimited); days and months in `timezone`."""

    user_daily: float = 0.0
    user_monthly: float = 0.0
    chat_daily: float = 0.0
    chat_monthly: float = 0.0
    global_daily: float = 0.0
    global_monthly: float = 0.0
    timezone: str = "UTC"
    admins_exempt: bool = True


@dataclass(frozen=True, slots=True)
class ClusterSection:
    """Several processes on one PostgreSQL database (`--role ingress|worker`)."""

    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    channels_per_worker: int = 100


@dataclass(frozen=True, slots=True)
class Secrets:
    """Only from the environment (or .env): never from config.toml."""

    openai_api_key: str = ""
    openai_base_url: str = ""
    discord_token: str = ""
    telegram_token: str = ""
    telegram_api_url: str = "https://api.telegram.org"
    database: str = ""
    database_url: str = ""
    health_file: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """All settings, typed and frozen."""

    bot: BotSection = field(default_factory=BotSection)
    openai: OpenAISection = field(default_factory=OpenAISection)
    models: ModelsSection = field(default_factory=ModelsSection)
    chat: ChatSection = field(default_factory=ChatSection)
    vision: VisionSection = field(default_factory=VisionSection)
    images: ImagesSection = field(default_factory=ImagesSection)
    voice: VoiceSection = field(default_factory=VoiceSection)
    assistant: AssistantSection = field(default_factory=AssistantSection)
    tools: ToolsSection = field(default_factory=ToolsSection)
    memory: MemorySection = field(default_factory=MemorySection)
    access: AccessSection = field(default_factory=AccessSection)
    storage: StorageSection = field(default_factory=StorageSection)
    telegram: TelegramSection = field(default_factory=TelegramSection)
    discord: DiscordSection = field(default_factory=DiscordSection)
    usage: UsageSection = field(default_factory=UsageSection)
    budgets: BudgetsSection = field(default_factory=BudgetsSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    secrets: Secrets = field(default_factory=Secrets)

    @property
    def database_url(self) -> str:
        """The database to use, as a URL or a path. The environment wins over the file,
        and within each a URL over a path: BOT_DATABASE_URL, BOT_DATABASE, [storage] url,
        [storage] path."""
        return (self.secrets.database_url or self.secrets.database or self.storage.url
                or self.storage.path)

    @property
    def postgres(self) -> bool:
        """Whether the database is PostgreSQL (else SQLite)."""
        return self.database_url.startswith(POSTGRES_SCHEMES)

    @property
    def database_path(self) -> str:
        """The SQLite file (with PostgreSQL: [storage] path, which only places the health
        file)."""
        url = self.database_url
        if self.postgres:
            return self.secrets.database or self.storage.path
        return url.removeprefix("sqlite://") if url.startswith("sqlite:///") else url

    @property
    def health_path(self) -> str:
        """BOT_HEALTH_FILE, else beside the database: where the running bot says it is live."""
        return self.secrets.health_file or f"{self.database_path}.health"


_SECTIONS = {f.name: f for f in fields(Config) if f.name != "secrets"}
_CHOICES = {
    ("bot", "group_trigger"): ("mention", "always"),
    ("chat", "tokenizer"): ("auto", "tiktoken", "estimate"),
    ("openai", "length_param"): ("auto", "max_tokens", "max_completion_tokens"),
    ("vision", "accepts_images"): ("auto", "yes", "no"),
    ("bot", "log_level"): ("DEBUG", "INFO", "WARNING", "ERROR"),
    ("vision", "detail"): ("low", "high", "auto"),
    ("images", "quality"): ("auto", "low", "medium", "high", "standard", "hd"),
    ("voice", "reply_voice"): ("auto", "always", "never"),
    ("voice", "show_transcript"): ("quote", "message", "off"),
    ("assistant", "backend"): ("responses", "assistants"),
}
# (lowest, highest) allowed; None = no bound. A float lowest of 0.0 means "more than 0".
_RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("openai", "timeout"): (0.0, None),
    ("openai", "max_retries"): (0, 10),
    ("openai", "connection_pools"): (1, 64),
    ("chat", "history_tokens"): (100, None),
    ("chat", "max_output_tokens"): (1, None),
    ("chat", "history_messages"): (1, None),
    ("vision", "max_image_mb"): (1, None),
    ("vision", "keep_images"): (0, None),
    ("vision", "context_images"): (0, None),
    ("images", "max_count"): (1, 10),
    ("voice", "speed"): (0.25, 4.0),
    ("voice", "max_audio_minutes"): (1, None),
    ("voice", "chunk_minutes"): (1, None),
    ("telegram", "poll_timeout"): (0, None),
    ("telegram", "album_wait"): (0, 60),
    ("assistant", "run_timeout"): (1, None),
    ("assistant", "max_file_mb"): (1, 512),
    ("assistant", "file_ttl_days"): (1, None),
    ("assistant", "container_minutes"): (1, 20),
    ("cluster", "lease_seconds"): (1.0, 3600.0),
    ("cluster", "poll_seconds"): (0.1, 60.0),
    ("cluster", "channels_per_worker"): (1, 10_000),
}
# what the Images API takes (exact sizes are checked per model when /draw runs)
_IMAGE_SIZE_RE = re.compile(r"^(auto|square|landscape|portrait|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
_SECRET_WORDS = ("key", "token", "secret", "password")
_KIND = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _build_section(cls: type, name: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: [{name}] must be a table")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            if any(w in key.lower() for w in _SECRET_WORDS):
                raise ConfigError(
                    f"config: {name}.{key} looks like a secret; set it in the environment instead"
                )
            raise ConfigError(f"config: unknown key {name}.{key}")
        values[key] = _coerce(hints[key], value, f"{name}.{key}")
        allowed = _CHOICES.get((name, key))
        if allowed and values[key] not in allowed:
            raise ConfigError(f"config: {name}.{key} must be one of {', '.join(allowed)}")
        if (name, key) in _RANGES:
            _check_range(name, key, values[key])
        elif isinstance(values[key], int | float) and values[key] < 0:
            raise ConfigError(f"config: {name}.{key} must not be negative")
    return cls(**values)


def _check_range(section: str, key: str, value: Any) -> None:
    low, high = _RANGES[(section, key)]
    where = f"config: {section}.{key}"
    if low == 0.0 and isinstance(low, float) and value <= 0:
        raise ConfigError(f"{where} must be more than 0 (got {value})")
    if low is not None and high is not None and not low <= value <= high:
        raise ConfigError(f"{where} must be between {low} and {high} (got {value})")
    if low is not None and value < low:
        raise ConfigError(f"{where} must be at least {low} (got {value})")
    if high is not None and value > high:
        raise ConfigError(f"{where} must be at most {high} (got {value})")


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if get_origin(hint) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"config: {where} must be a list")
        (item,) = get_args(hint)[:1]
        return tuple(_coerce(item, v, where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, types.UnionType):  # e.g. int | str: any arm, never a bool for int
        if isinstance(value, bool) or not isinstance(value, hint):
            kinds = " or ".join(_KIND.get(a, a.__name__) for a in get_args(hint))
            raise ConfigError(f"config: {where} must be {kinds}")
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config: {where} must be {_KIND.get(hint, hint.__name__)}")
    return value


def apply_dotenv(path: str | os.PathLike[str] = ".env") -> bool:
    """Load a .env file into os.environ (python-dotenv's parser; the real environment wins).

    Called first thing by `python -m bot`, before anything reads the environment, so
    BOT_CONFIG and BOT_DATABASE set there count too.
    """
    from dotenv import load_dotenv

    p = Path(path)
    try:
        if not p.is_file():
            return False
        return load_dotenv(p, override=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read it ({_why(e)})") from None


def _why(e: BaseException) -> str:
    if isinstance(e, PermissionError):
        return "permission denied: make it readable by the user running the bot"
    if isinstance(e, IsADirectoryError):
        return "it is a directory, not a file"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return e.strerror or str(e) if isinstance(e, OSError) else str(e)


def load_config(
    path: str | os.PathLike[str] | None,
    env: dict[str, str] | None = None,
    *,
    required: bool = False,
) -> Config:
    """Read config.toml (a missing default file = all defaults) and secrets from the env.

    With env=None the process environment is read (`python -m bot` has applied .env to
    it already, see apply_dotenv); tests pass env explicitly.
    """
    environ = dict(os.environ) if env is None else dict(env)
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            if required:
                raise ConfigError(f"config: file not found: {p}") from None
            text = ""
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config: cannot read {p.absolute()} ({_why(e)})") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config: {p} is not valid TOML: {e}") from None
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        f = _SECTIONS.get(name)
        if f is None:
            raise ConfigError(f"config: unknown section [{name}]")
        cls = get_type_hints(Config)[name]
        sections[name] = _build_section(cls, name, value)
    api_url = environ.get("TELEGRAM_API_URL", "").strip() or "https://api.telegram.org"
    secrets = Secrets(
        openai_api_key=environ.get("OPENAI_API_KEY", "").strip(),
        openai_base_url=environ.get("OPENAI_BASE_URL", "").strip(),
        discord_token=environ.get("DISCORD_BOT_TOKEN", "").strip(),
        telegram_token=environ.get("TELEGRAM_BOT_TOKEN", "").strip(),
        telegram_api_url=api_url.rstrip("/"),
        database=environ.get("BOT_DATABASE", "").strip(),
        database_url=environ.get("BOT_DATABASE_URL", "").strip(),
        health_file=environ.get("BOT_HEALTH_FILE", "").strip(),
    )
    config = Config(**sections, secrets=secrets)
    webhook_secret = environ.get("TELEGRAM_WEBHOOK_SECRET", "").strip()
    if webhook_secret:  # a secret belongs in the environment; it wins over the file
        if not _SECRET_TOKEN.fullmatch(webhook_secret):
            raise ConfigError("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of "
                              "A-Z a-z 0-9 _ -")
        object.__setattr__(config.telegram, "webhook_secret", webhook_secret)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    for where, url in (("BOT_DATABASE_URL", config.secrets.database_url),
                       ("config: storage.url", config.storage.url)):
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme and f"{scheme}://" not in (*POSTGRES_SCHEMES, "sqlite://"):
            raise ConfigError(f"{where} must be postgresql://user:password@host/database,"
                              f" sqlite:///path or a file path (got a {scheme}:// URL)")
        if scheme == "sqlite" and not url.startswith("sqlite:///"):
            raise ConfigError(f"{where}: a SQLite URL is sqlite:///path (three slashes)")
    if not config.secrets.openai_api_key and not config.secrets.openai_base_url:
        raise ConfigError(
            "OPENAI_API_KEY is not set (set it, or OPENAI_BASE_URL for a local server)"
        )
    if config.models.chat not in config.models.choices:
        # the default model is always selectable
        object.__setattr__(config.models, "choices", (config.models.chat, *config.models.choices))
    if not config.models.chat.strip():
        raise ConfigError("config: models.chat must name a model")
    if config.voice.voice not in config.voice.voices:
        raise ConfigError("config: voice.voice must be one of voice.voices")
    if 0 < config.chat.context_window < 512:
        raise ConfigError("config: chat.context_window must be 0 (ask the server) or at "
                          "least 512")
    if not _IMAGE_SIZE_RE.match(config.images.size):
        raise ConfigError("config: images.size must be auto, square, landscape, portrait or "
                          f"WIDTHxHEIGHT such as 1024x1024 (got {config.images.size!r})")
    _validate_assistant(config.assistant)
    if config.bot.resume_minutes > 1440:
        raise ConfigError("config: bot.resume_minutes must be between 0 and 1440 (a day)")
    if not config.secrets.telegram_api_url.startswith(("http://", "https://")):
        raise ConfigError("TELEGRAM_API_URL must start with http:// or https://")
    _validate_webhook(config.telegram)
    _validate_shards(config.discord)
    _validate_usage(config)
    _validate_tools(config)
    if config.cluster.poll_seconds > config.cluster.lease_seconds:
        raise ConfigError("config: cluster.poll_seconds must not be more than "
                          "cluster.lease_seconds (a dead worker's channels are found by it)")


def _validate_shards(d: DiscordSection) -> None:
    """Shard numbers as Discord's IDENTIFY takes them ([shard_id, num_shards])."""
    count = d.shard_count
    if isinstance(count, str) and count != "auto":
        raise ConfigError(f'config: discord.shard_count must be 0, "auto" or a number of '
                          f"shards (got {count!r})")
    if d.shard_ids and not (isinstance(count, int) and count > 0):
        raise ConfigError("config: discord.shard_ids needs a numeric discord.shard_count (the "
                          "total over all processes)")
    for i in d.shard_ids:
        if not 0 <= i < int(count):
            raise ConfigError(f"config: discord.shard_ids: {i} is not a shard of "
                              f"shard_count = {count} (0 to {int(count) - 1})")
    if len(set(d.shard_ids)) != len(d.shard_ids):
        raise ConfigError("config: discord.shard_ids lists a shard twice")


WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram calls (setWebhook docs)
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _validate_webhook(tg: TelegramSection) -> None:
    """Telegram's own setWebhook rules, checked before anything is started."""
    if not 1 <= tg.webhook_port <= 65535:
        raise ConfigError("config: telegram.webhook_port must be between 1 and 65535")
    if not tg.webhook_listen.strip():
        raise ConfigError("config: telegram.webhook_listen must be an address, e.g. 0.0.0.0")
    if tg.webhook_secret and not _SECRET_TOKEN.fullmatch(tg.webhook_secret):
        raise ConfigError("config: telegram.webhook_secret must be 1-256 characters of "
                          "A-Z a-z 0-9 _ -")
    if not tg.webhook_url:
        return
    parts = urlsplit(tg.webhook_url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError("config: telegram.webhook_url must be an https:// URL (Telegram "
                          "only calls HTTPS webhooks; your reverse proxy terminates TLS)")
    if port is not None and port not in WEBHOOK_PORTS:
        raise ConfigError("config: telegram.webhook_url may only use port 443, 80, 88 or "
                          "8443 (Telegram's rule); the proxy forwards to webhook_port")
    if not tg.webhook_secret:
        raise ConfigError("config: telegram.webhook_secret (or the environment variable "
                          "TELEGRAM_WEBHOOK_SECRET) is required with telegram.webhook_url "
                          "(1-256 characters of A-Z a-z 0-9 _ -)")


def _validate_usage(config: Config) -> None:
    """Budgets are dollars >= 0, the budget timezone must exist, a price file must parse."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from bot.prices import load_override

    for f in fields(BudgetsSection):
        value = getattr(config.budgets, f.name)
        if isinstance(value, float) and not 0 <= value < float("inf"):
            raise ConfigError(f"config: budgets.{f.name} must not be negative")

    try:
        ZoneInfo(config.budgets.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"config: budgets.timezone: unknown timezone "
                          f"{config.budgets.timezone!r} (e.g. \"UTC\", \"Europe/Berlin\")"
                          ) from None
    if config.usage.prices:
        try:
            load_override(config.usage.prices)
        except (ValueError, OSError) as e:
            raise ConfigError(f"config: usage.prices: {e}") from None
def _validate_assistant(a: AssistantSection) -> None:
    """File types are bare lower-case extensions; a configured font must exist (numbers
    are range-checked with the others, in _RANGES)."""
    for ext in a.allowed_types:
        if not ext or not ext.replace("_", "").isalnum() or ext != ext.lower():
            raise ConfigError(f"config: assistant.allowed_types: {ext!r} is not a lower-case "
                              "file extension without the dot")
    if a.cjk_font not in ("", "auto") and not Path(a.cjk_font).is_file():
        raise ConfigError(f"config: assistant.cjk_font: no such file {a.cjk_font!r} "
                          '(use "auto" to find one, or "" for none)')


def _validate_tools(config: Config) -> None:
    tools, memory = config.tools, config.memory
    for name in tools.enabled:
        if name not in TOOL_NAMES:
            raise ConfigError(f"config: tools.enabled: unknown tool {name!r} (known: "
                              f"{', '.join(TOOL_NAMES)})")
    if not 0 < tools.timeout <= 600:
        raise ConfigError("config: tools.timeout must be between 0 and 600 seconds")
    if not 0 <= tools.max_rounds <= 20:
        raise ConfigError("config: tools.max_rounds must be between 0 and 20")
    if not 0 < tools.fetch_max_mb <= 50:
        raise ConfigError("config: tools.fetch_max_mb must be between 0 and 50")
    if not 0 < tools.fetch_timeout <= 120:
        raise ConfigError("config: tools.fetch_timeout must be between 0 and 120 seconds")
    if not 0 <= memory.recall_k <= 20:
        raise ConfigError("config: memory.recall_k must be between 0 and 20")
    if memory.dimensions and (not 8 <= memory.dimensions <= 4096 or memory.dimensions % 8):
        raise ConfigError("config: memory.dimensions must be 0 (the model's own) or a "
                          "multiple of 8 from 8 to 4096")
    if not 1 <= memory.batch_size <= 2048:
        raise ConfigError("config: memory.batch_size must be between 1 and 2048")
    if not 0 < memory.recall_timeout <= 30:
        raise ConfigError("config: memory.recall_timeout must be between 0 and 30 seconds")
    if not 1 <= memory.search_results <= 20:
        raise ConfigError("config: memory.search_results must be between 1 and 20")
