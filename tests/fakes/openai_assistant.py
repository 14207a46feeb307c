"""Fake OpenAI: Files, Containers, Vector stores, Conversations and Responses with tools.

Mounted into `FakeOpenAI` (tests/fakes/openai_api.py): every path it does not serve
itself is offered to `AssistantAPI.route`. Shapes follow the openai 3.x types
(`openai.types.file_object`, `containers`, `vector_stores`, `conversations`,
`responses`): strict about unknown parameters, purposes, ids and expired containers.

The "model" is scripted per test with `Turn`s: a turn says what the model does (run code
that writes files to /mnt/data, search the vector store, answer with text and citations,
fail, end incomplete, hang until cancelled). The code interpreter never executes code;
the files a turn names are what the code "wrote".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from tests.fakes.openai_api import (
    _BODY,
    _RECORD,
    ApiError,
    Request,
    _invalid_type,
    _invalid_value,
    _missing,
    _rand_id,
    _sse,
    count_tokens,
)

if TYPE_CHECKING:
    from tests.fakes.openai_api import FakeOpenAI

log = logging.getLogger(__name__)

Json = dict[str, Any]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_FILE_BYTES = 512 * 1024 * 1024
# file_search can index these (OpenAI's supported-files table); csv/xlsx are code-only
SEARCHABLE = (".c", ".cpp", ".cs", ".css", ".doc", ".docx", ".go", ".html", ".java", ".js",
              ".json", ".md", ".pdf", ".php", ".pptx", ".py", ".rb", ".sh", ".tex", ".ts",
              ".txt")
ZIP_FORMATS = (".docx", ".pptx", ".xlsx")
INCLUDABLE = ("file_search_call.results", "web_search_call.results",
              "web_search_call.action.sources", "message.input_image.image_url",
              "computer_call_output.output.image_url", "code_interpreter_call.outputs",
              "reasoning.encrypted_content", "message.output_text.logprobs")
RESPONSE_PARAMS = frozenset({
    "access_programs", "background", "background_options", "context_management",
    "conversation", "image", "include", "input", "instructions", "max_output_tokens",
    "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
    "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "user",
})
TOOL_TYPES = ("function", "file_search", "computer", "computer_use_preview", "web_search",
              "web_search_preview", "mcp", "code_interpreter", "image_generation",
              "local_shell", "shell", "custom", "apply_patch", "tool_search", "namespace")
CONTAINER_EXPIRED = "Container is expired."
SANDBOX_LINK = re.compile(r"\[([^\]]*)\]\(sandbox:(/mnt/data/[^)\s]+)\)")


def unknown_parameter(name: str) -> ApiError:
    """The Responses-era error for a parameter the endpoint does not take."""
    return ApiError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def not_found(message: str, param: str | None = None) -> ApiError:
    """404 in the API's shape."""
    return ApiError(404, message, param=param)


def now() -> int:
    """Unix seconds."""
    return int(time.time())


# --------------------------------------------------------------------------- scripting


@dataclass
class Turn:
    """What the fake model does for one response (or assistants run).

    code: Python the code interpreter "runs" (needs the code_interpreter tool).
    files: name -> bytes the code writes to /mnt/data; each becomes a container file
        (source "assistant") cited with a container_file_citation.
    search: file_search queries (needs the file_search tool); results are the vector
        store's files; `cite` names files to cite with file_citation annotations.
    status: how the response ends; `error` (code, message) for "failed",
        `incomplete_reason` for "incomplete"; "expired" exists for assistants runs only.
    hold: the response pauses after its tool calls until this event is set.
    hang: the response never finishes (until cancelled or the fake stops).
    tool_call: (assistants backend) the run asks for this function first.
    """

    text: str = ""
    code: str | None = None
    logs: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    search: list[str] | None = None
    cite: list[str] = field(default_factory=list)
    status: Literal["completed", "failed", "incomplete", "expired"] = "completed"
    error: tuple[str, str] = ("server_error", "The model failed to generate a response.")
    incomplete_reason: str = "max_output_tokens"
    hold: asyncio.Event | None = None
    hang: bool = False
    tool_call: tuple[str, str] | None = None


@dataclass
class FileRec:
    """An uploaded file (Files API)."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None = None

    def obj(self) -> Json:
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "expires_at": self.expires_at,
                "status_details": None}


@dataclass
class ContainerFile:
    """A file inside a container (/mnt/data/...)."""

    id: str
    container_id: str
    path: str
    data: bytes
    source: str
    created_at: int

    def obj(self) -> Json:
        return {"id": self.id, "object": "container.file", "bytes": len(self.data),
                "container_id": self.container_id, "created_at": self.created_at,
                "path": self.path, "source": self.source}


@dataclass
class Container:
    """A code-interpreter container."""

    id: str
    name: str
    created_at: int
    minutes: int = 20
    memory_limit: str = "1g"
    expired: bool = False
    deleted: bool = False
    last_active_at: int = 0
    files: dict[str, ContainerFile] = field(default_factory=dict)

    def obj(self) -> Json:
        return {"id": self.id, "object": "container", "created_at": self.created_at,
                "name": self.name, "status": "expired" if self.expired else "running",
                "expires_after": {"anchor": "last_active_at", "minutes": self.minutes},
                "last_active_at": self.last_active_at or self.created_at,
                "memory_limit": self.memory_limit,
                "network_policy": {"type": "disabled", "allowed_domains": None}}

    def by_path(self, path: str) -> ContainerFile | None:
        return next((f for f in self.files.values() if f.path == path), None)


@dataclass
class VSFile:
    """A file attached to a vector store, with its processing state."""

    file_id: str
    vector_store_id: str
    created_at: int
    usage_bytes: int
    status: str = "in_progress"
    last_error: Json | None = None
    polls_left: int = 1
    attributes: Json | None = None

    def obj(self) -> Json:
        return {"id": self.file_id, "object": "vector_store.file", "created_at": self.created_at,
                "usage_bytes": self.usage_bytes if self.status == "completed" else 0,
                "vector_store_id": self.vector_store_id, "status": self.status,
                "last_error": self.last_error, "attributes": self.attributes or {},
                "chunking_strategy": {"type": "static", "static": {
                    "max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}}


@dataclass
class VectorStore:
    """A vector store for file_search."""

    id: str
    name: str
    created_at: int
    metadata: Json = field(default_factory=dict)
    expires_after: Json | None = None
    files: dict[str, VSFile] = field(default_factory=dict)

    def obj(self) -> Json:
        counts = {s: sum(1 for f in self.files.values() if f.status == s)
                  for s in ("in_progress", "completed", "failed", "cancelled")}
        counts["total"] = len(self.files)
        return {"id": self.id, "object": "vector_store", "created_at": self.created_at,
                "name": self.name, "usage_bytes": sum(f.usage_bytes for f in self.files.values()
                                                      if f.status == "completed"),
                "file_counts": counts,
                "status": "in_progress" if counts["in_progress"] else "completed",
                "expires_after": self.expires_after, "expires_at": None,
                "last_active_at": self.created_at, "metadata": self.metadata}


@dataclass
class Conversation:
    """A Conversations API conversation: its items in order."""

    id: str
    created_at: int
    metadata: Json = field(default_factory=dict)
    items: list[Json] = field(default_factory=list)
    deleted: bool = False

    def obj(self) -> Json:
        return {"id": self.id, "object": "conversation", "created_at": self.created_at,
                "metadata": self.metadata}


@dataclass
class ResponseRec:
    """A response being produced or done."""

    obj: Json
    background: bool
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Plan:
    """One response's events and final object, built from a Turn; streamed or applied."""

    def __init__(self) -> None:
        self.events: list[Json | asyncio.Event] = []


# --------------------------------------------------------------------------- the API


class AssistantAPI:
    """Files, containers, vector stores, conversations, responses (and, mounted from
    openai_assistant_legacy, the Assistants API v2)."""

    def __init__(self, owner: FakeOpenAI) -> None:
        self.owner = owner
        self.files: dict[str, FileRec] = {}
        self.containers: dict[str, Container] = {}
        self.vector_stores: dict[str, VectorStore] = {}
        self.conversations: dict[str, Conversation] = {}
        self.responses: dict[str, ResponseRec] = {}
        self.turns: deque[Turn] = deque()
        self.processing_failures: dict[str, tuple[str, str]] = {}
        self.deleted_files: list[str] = []
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]]]] = []
        add = self._add
        add("POST", r"/files", self._file_create)
        add("GET", r"/files", self._file_list)
        add("GET", r"/files/(?P<fid>[^/]+)", self._file_get)
        add("DELETE", r"/files/(?P<fid>[^/]+)", self._file_delete)
        add("GET", r"/files/(?P<fid>[^/]+)/content", self._file_content)
        add("POST", r"/containers", self._container_create)
        add("GET", r"/containers", self._container_list)
        add("GET", r"/containers/(?P<cid>[^/]+)", self._container_get)
        add("DELETE", r"/containers/(?P<cid>[^/]+)", self._container_delete)
        add("POST", r"/containers/(?P<cid>[^/]+)/files", self._cfile_create)
        add("GET", r"/containers/(?P<cid>[^/]+)/files", self._cfile_list)
        add("GET", r"/containers/(?P<cid>[^/]+)/files/(?P<fid>[^/]+)", self._cfile_get)
        add("DELETE", r"/containers/(?P<cid>[^/]+)/files/(?P<fid>[^/]+)", self._cfile_delete)
        add("GET", r"/containers/(?P<cid>[^/]+)/files/(?P<fid>[^/]+)/content",
            self._cfile_content)
        add("POST", r"/vector_stores", self._vs_create)
        add("GET", r"/vector_stores/(?P<vid>[^/]+)", self._vs_get)
        add("DELETE", r"/vector_stores/(?P<vid>[^/]+)", self._vs_delete)
        add("POST", r"/vector_stores/(?P<vid>[^/]+)/files", self._vsf_create)
        add("GET", r"/vector_stores/(?P<vid>[^/]+)/files", self._vsf_list)
        add("GET", r"/vector_stores/(?P<vid>[^/]+)/files/(?P<fid>[^/]+)", self._vsf_get)
        add("DELETE", r"/vector_stores/(?P<vid>[^/]+)/files/(?P<fid>[^/]+)", self._vsf_delete)
        add("POST", r"/conversations", self._conv_create)
        add("GET", r"/conversations/(?P<cid>[^/]+)", self._conv_get)
        add("POST", r"/conversations/(?P<cid>[^/]+)", self._conv_update)
        add("DELETE", r"/conversations/(?P<cid>[^/]+)", self._conv_delete)
        add("POST", r"/conversations/(?P<cid>[^/]+)/items", self._conv_items_create)
        add("GET", r"/conversations/(?P<cid>[^/]+)/items", self._conv_items_list)
        add("POST", r"/responses", self._response_create)
        add("GET", r"/responses/(?P<rid>[^/]+)", self._response_get)
        add("DELETE", r"/responses/(?P<rid>[^/]+)", self._response_delete)
        add("POST", r"/responses/(?P<rid>[^/]+)/cancel", self._response_cancel)
        from tests.fakes.openai_assistant_legacy import LegacyAssistants

        self.legacy = LegacyAssistants(self)
        self.legacy.mount(add)

    def _add(self, method: str, pattern: str, fn: Callable[..., Awaitable[Any]]) -> None:
        self._routes.append((method, re.compile(f"^/v1{pattern}$"), fn))

    def route(self, method: str, path: str) -> Route | None:
        """The handler for a request this module serves, or None."""
        for m, pattern, fn in self._routes:
            match = pattern.match(path)
            if match and m == method:
                groups = match.groupdict()

                async def call(request: web.Request, fn: Any = fn, groups: Json = groups
                               ) -> web.StreamResponse:
                    await self.owner._maybe_fail(request, "")
                    result = await fn(request, **groups)
                    if isinstance(result, web.StreamResponse):
                        return result
                    return web.json_response(result)

                return call
        return None

    # ----------------------------------------------------------------- scripting

    def script(self, *turns: Turn) -> None:
        """Queue what the model does for the next responses / runs (FIFO)."""
        self.turns.extend(turns)

    def expire_containers(self, container_id: str | None = None) -> None:
        """Expire one container, or all of them (OpenAI expires idle ones after ~20 min)."""
        for c in self.containers.values():
            if container_id is None or c.id == container_id:
                c.expired = True

    def fail_processing(self, filename: str, code: str = "invalid_file",
                        message: str = "The file could not be parsed.") -> None:
        """Make vector-store processing of files with this name fail."""
        self.processing_failures[filename] = (code, message)

    def live_containers(self) -> list[Container]:
        """Containers neither expired nor deleted."""
        return [c for c in self.containers.values() if not c.expired and not c.deleted]

    def response_requests(self) -> list[Json]:
        """JSON bodies of every POST /v1/responses, in order."""
        return [r.json for r in self.owner.requests_to("/responses")]

    def file_named(self, name: str) -> FileRec | None:
        """The newest uploaded file with this name."""
        found = [f for f in self.files.values() if f.filename == name]
        return found[-1] if found else None

    # ----------------------------------------------------------------- common

    @staticmethod
    def body(request: web.Request, allowed: frozenset[str] | set[str],
             required: tuple[str, ...] = ()) -> Json:
        """The JSON body, strictly: an object, known keys only, required keys present."""
        body = request.get(_BODY)
        if request.content_type == "multipart/form-data" or (
                body is not None and not isinstance(body, dict)):
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This "
                           "likely means you aren't using your HTTP library correctly. The "
                           "OpenAI API expects a JSON payload, but what was sent was not "
                           "valid JSON.")
        body = body or {}
        for key in body:
            if key not in allowed:
                raise unknown_parameter(key)
        for key in required:
            if key not in body:
                raise _missing(key)
        return body

    @staticmethod
    def record(request: web.Request) -> Request:
        return request[_RECORD]  # type: ignore[no-any-return]

    @staticmethod
    def page(data: list[Json], request: web.Request) -> Json:
        """A cursor page (`after`, `limit`, `order`) like the list endpoints return."""
        q = request.query
        order = q.get("order", "desc")
        items = list(data) if order == "asc" else list(reversed(data))
        after = q.get("after")
        if after:
            ids = [d["id"] for d in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = int(q.get("limit", "20"))
        if not 1 <= limit <= 100:
            raise ApiError(400, f"Invalid 'limit': integer out of range. Expected a value "
                           f"between 1 and 100, but got {limit} instead.", param="limit",
                           code="integer_out_of_range")
        shown = items[:limit]
        return {"object": "list", "data": shown,
                "first_id": shown[0]["id"] if shown else None,
                "last_id": shown[-1]["id"] if shown else None,
                "has_more": len(items) > limit}

    # ----------------------------------------------------------------- files

    async def _file_create(self, request: web.Request) -> Json:
        if request.content_type != "multipart/form-data":
            raise ApiError(400, f"Invalid Content-Type header ({request.content_type}), "
                           "expected multipart/form-data.")
        rec = self.record(request)
        for name in [*rec.fields, *(f.field for f in rec.files)]:
            if name not in ("file", "purpose", "expires_after[anchor]",
                            "expires_after[seconds]"):
                raise unknown_parameter(name)
        up = rec.file("file")
        if up is None:
            raise _missing("file")
        purpose = rec.field("purpose")
        if purpose is None:
            raise _missing("purpose")
        if purpose not in FILE_PURPOSES:
            raise _invalid_value("purpose", purpose, FILE_PURPOSES)
        if not up.data:
            raise ApiError(400, "File is empty.", param="file")
        if len(up.data) > MAX_FILE_BYTES:
            raise ApiError(400, "File is too large. The maximum size is 512 MB.", param="file")
        expires_at = None
        seconds = rec.field("expires_after[seconds]")
        if seconds is not None:
            if rec.field("expires_after[anchor]") != "created_at":
                raise _invalid_value("expires_after.anchor",
                                     rec.field("expires_after[anchor]"), ("created_at",))
            if not seconds.isdigit() or not 3600 <= int(seconds) <= 2_592_000:
                raise ApiError(400, "Invalid 'expires_after.seconds': expected a value between "
                               "3600 and 2592000.", param="expires_after.seconds",
                               code="invalid_value")
            expires_at = now() + int(seconds)
        f = FileRec(_rand_id("file-", 22), up.filename or "upload", purpose, up.data, now(),
                    expires_at)
        self.files[f.id] = f
        return f.obj()

    def _file(self, fid: str) -> FileRec:
        f = self.files.get(fid)
        if f is None:
            raise not_found(f"No such File object: {fid}", "id")
        return f

    async def _file_list(self, request: web.Request) -> Json:
        purpose = request.query.get("purpose")
        data = [f.obj() for f in self.files.values() if purpose in (None, f.purpose)]
        return self.page(data, request)

    async def _file_get(self, request: web.Request, fid: str) -> Json:
        return self._file(fid).obj()

    async def _file_content(self, request: web.Request, fid: str) -> web.Response:
        f = self._file(fid)
        if f.purpose == "assistants":
            raise ApiError(400, "Not allowed to download files of purpose: assistants")
        return web.Response(body=f.data, content_type="application/octet-stream")

    async def _file_delete(self, request: web.Request, fid: str) -> Json:
        self._file(fid)
        del self.files[fid]
        self.deleted_files.append(fid)
        for vs in self.vector_stores.values():
            vs.files.pop(fid, None)
        return {"id": fid, "object": "file", "deleted": True}

    # ----------------------------------------------------------------- containers

    def _container(self, cid: str, *, usable: bool = True) -> Container:
        c = self.containers.get(cid)
        if c is None or c.deleted:
            raise not_found(f"Container with id '{cid}' not found.")
        if usable and c.expired:
            raise ApiError(400, CONTAINER_EXPIRED)
        return c

    async def _container_create(self, request: web.Request) -> Json:
        body = self.body(request, {"name", "expires_after", "file_ids", "memory_limit",
                                   "network_policy", "skills"}, ("name",))
        if not isinstance(body["name"], str):
            raise _invalid_type("name", "a string", body["name"])
        minutes = 20
        exp = body.get("expires_after")
        if exp is not None:
            if not isinstance(exp, dict):
                raise _invalid_type("expires_after", "an object", exp)
            for key in exp:
                if key not in ("anchor", "minutes"):
                    raise unknown_parameter(f"expires_after.{key}")
            if exp.get("anchor") != "last_active_at":
                raise _invalid_value("expires_after.anchor", exp.get("anchor"),
                                     ("last_active_at",))
            minutes = exp.get("minutes")
            if not isinstance(minutes, int) or not 1 <= minutes <= 20:
                raise ApiError(400, "Invalid 'expires_after.minutes': expected an integer "
                               "between 1 and 20.", param="expires_after.minutes",
                               code="invalid_value")
        memory = body.get("memory_limit", "1g")
        if memory not in ("1g", "4g", "16g", "64g"):
            raise _invalid_value("memory_limit", memory, ("1g", "4g", "16g", "64g"))
        c = Container(_rand_id("cntr_", 40), body["name"], now(), minutes, memory)
        for fid in body.get("file_ids") or []:
            f = self._file(fid)
            self._put(c, f.filename, f.data, "user")
        self.containers[c.id] = c
        return c.obj()

    def _put(self, c: Container, name: str, data: bytes, source: str) -> ContainerFile:
        path = f"/mnt/data/{name}"
        old = c.by_path(path)
        if old is not None:
            del c.files[old.id]
        cf = ContainerFile(_rand_id("cfile_", 32), c.id, path, data, source, now())
        c.files[cf.id] = cf
        c.last_active_at = now()
        return cf

    async def _container_list(self, request: web.Request) -> Json:
        data = [c.obj() for c in self.containers.values() if not c.deleted]
        return self.page(data, request)

    async def _container_get(self, request: web.Request, cid: str) -> Json:
        return self._container(cid, usable=False).obj()

    async def _container_delete(self, request: web.Request, cid: str) -> Json:
        c = self._container(cid, usable=False)
        c.deleted = True
        return {"id": cid, "object": "container.deleted", "deleted": True}

    async def _cfile_create(self, request: web.Request, cid: str) -> Json:
        c = self._container(cid)
        if request.content_type == "multipart/form-data":
            rec = self.record(request)
            for name in [*rec.fields, *(f.field for f in rec.files)]:
                if name not in ("file", "file_id"):
                    raise unknown_parameter(name)
            up = rec.file("file")
            fid = rec.field("file_id")
            if up is not None:
                return self._put(c, up.filename or "upload", up.data, "user").obj()
        else:
            body = self.body(request, {"file", "file_id"})
            fid = body.get("file_id")
        if not fid:
            raise ApiError(400, "Either 'file' or 'file_id' must be provided.", param="file")
        f = self._file(fid)
        return self._put(c, f.filename, f.data, "user").obj()

    async def _cfile_list(self, request: web.Request, cid: str) -> Json:
        c = self._container(cid)
        return self.page([f.obj() for f in c.files.values()], request)

    def _cfile(self, cid: str, fid: str) -> ContainerFile:
        c = self._container(cid)
        f = c.files.get(fid)
        if f is None:
            raise not_found(f"File with id '{fid}' not found in container '{cid}'.")
        return f

    async def _cfile_get(self, request: web.Request, cid: str, fid: str) -> Json:
        return self._cfile(cid, fid).obj()

    async def _cfile_content(self, request: web.Request, cid: str, fid: str) -> web.Response:
        f = self._cfile(cid, fid)
        return web.Response(body=f.data, content_type="application/octet-stream")

    async def _cfile_delete(self, request: web.Request, cid: str, fid: str) -> web.Response:
        self._cfile(cid, fid)
        del self.containers[cid].files[fid]
        return web.Response(status=200, body=b"", content_type="application/json")

    # ----------------------------------------------------------------- vector stores

    def _vs(self, vid: str) -> VectorStore:
        vs = self.vector_stores.get(vid)
        if vs is None:
            raise not_found(f"No vector store found with id '{vid}'.")
        return vs

    async def _vs_create(self, request: web.Request) -> Json:
        body = self.body(request, {"chunking_strategy", "description", "expires_after",
                                   "file_ids", "metadata", "name"})
        exp = body.get("expires_after")
        if exp is not None and (not isinstance(exp, dict) or exp.get("anchor") !=
                                "last_active_at" or not isinstance(exp.get("days"), int)):
            raise ApiError(400, "Invalid 'expires_after': expected {anchor: 'last_active_at', "
                           "days: integer}.", param="expires_after")
        vs = VectorStore(_rand_id("vs_", 24), str(body.get("name") or ""), now(),
                         dict(body.get("metadata") or {}), exp)
        self.vector_stores[vs.id] = vs
        for fid in body.get("file_ids") or []:
            self._attach(vs, self._file(fid))
        return vs.obj()

    async def _vs_get(self, request: web.Request, vid: str) -> Json:
        return self._vs(vid).obj()

    async def _vs_delete(self, request: web.Request, vid: str) -> Json:
        self._vs(vid)
        del self.vector_stores[vid]
        return {"id": vid, "object": "vector_store.deleted", "deleted": True}

    def _attach(self, vs: VectorStore, f: FileRec) -> VSFile:
        if f.purpose not in ("assistants", "user_data"):
            raise ApiError(400, f"File {f.id} has purpose '{f.purpose}'; vector stores take "
                           "files with purpose 'assistants' or 'user_data'.", param="file_id")
        vf = VSFile(f.id, vs.id, now(), len(f.data))
        vs.files[f.id] = vf
        return vf

    def _process(self, vf: VSFile) -> None:
        """Finish processing on a poll: unsupported types and unparsable files fail."""
        if vf.status != "in_progress":
            return
        if vf.polls_left > 0:
            vf.polls_left -= 1
            return
        f = self.files.get(vf.file_id)
        name = f.filename if f else ""
        ext = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        failure = self.processing_failures.get(name)
        if failure is None and ext not in SEARCHABLE:
            failure = ("unsupported_file", f"The file type {ext or '(none)'} is not supported.")
        if failure is None and f is not None:
            magic = {".pdf": b"%PDF"}.get(ext, b"PK" if ext in ZIP_FORMATS else b"")
            if magic and not f.data.startswith(magic):
                failure = ("invalid_file", "The file could not be parsed.")
            elif ext not in (*ZIP_FORMATS, ".pdf", ".doc"):
                try:
                    f.data.decode("utf-8")
                except UnicodeDecodeError:
                    failure = ("invalid_file", "The file is not valid UTF-8 text.")
        if failure is not None:
            vf.status = "failed"
            vf.last_error = {"code": failure[0], "message": failure[1]}
        else:
            vf.status = "completed"

    async def _vsf_create(self, request: web.Request, vid: str) -> Json:
        vs = self._vs(vid)
        body = self.body(request, {"file_id", "attributes", "chunking_strategy"}, ("file_id",))
        return self._attach(vs, self._file(body["file_id"])).obj()

    def _vsf(self, vid: str, fid: str) -> VSFile:
        vf = self._vs(vid).files.get(fid)
        if vf is None:
            raise not_found(f"No file found with id '{fid}' in vector store '{vid}'.")
        return vf

    async def _vsf_get(self, request: web.Request, vid: str, fid: str) -> web.Response:
        vf = self._vsf(vid, fid)
        self._process(vf)
        resp = web.json_response(vf.obj())
        if vf.status == "in_progress":
            resp.headers["openai-poll-after-ms"] = "10"
        return resp

    async def _vsf_list(self, request: web.Request, vid: str) -> Json:
        vs = self._vs(vid)
        return self.page([f.obj() for f in vs.files.values()], request)

    async def _vsf_delete(self, request: web.Request, vid: str, fid: str) -> Json:
        self._vsf(vid, fid)
        del self.vector_stores[vid].files[fid]
        return {"id": fid, "object": "vector_store.file.deleted", "deleted": True}

    # ----------------------------------------------------------------- conversations

    def _conv(self, cid: str) -> Conversation:
        conv = self.conversations.get(cid)
        if conv is None or conv.deleted:
            raise not_found(f"Conversation with id '{cid}' not found.")
        return conv

    def _input_items(self, items: Any, param: str) -> list[Json]:
        """Validate input items (messages) and give them ids as stored items."""
        if not isinstance(items, list):
            raise _invalid_type(param, "an array", items)
        out = []
        for i, item in enumerate(items):
            p = f"{param}[{i}]"
            if not isinstance(item, dict):
                raise _invalid_type(p, "an object", item)
            kind = item.get("type", "message")
            if kind != "message":
                out.append({**item, "id": item.get("id") or _rand_id("item_", 24)})
                continue
            for key in item:
                if key not in ("type", "role", "content", "phase", "id", "status"):
                    raise unknown_parameter(f"{p}.{key}")
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _invalid_value(f"{p}.role", role,
                                     ("user", "assistant", "system", "developer"))
            content = item.get("content")
            if isinstance(content, str):
                part_type = "output_text" if role == "assistant" else "input_text"
                parts: list[Json] = [{"type": part_type, "text": content}]
                if role == "assistant":
                    parts[0]["annotations"] = []
            elif isinstance(content, list):
                parts = []
                for k, part in enumerate(content):
                    ptype = part.get("type") if isinstance(part, dict) else None
                    allowed = (("output_text", "refusal") if role == "assistant" else
                               ("input_text", "input_image", "input_file"))
                    if ptype not in allowed:
                        raise _invalid_value(f"{p}.content[{k}].type", ptype, allowed)
                    if ptype == "input_file" and part.get("file_id"):
                        self._file(part["file_id"])
                    parts.append(dict(part))
            else:
                raise _invalid_type(f"{p}.content", "a string or array", content)
            out.append({"id": _rand_id("msg_", 40), "type": "message", "role": role,
                        "content": parts, "status": "completed"})
        return out

    async def _conv_create(self, request: web.Request) -> Json:
        body = self.body(request, {"items", "metadata"})
        items = body.get("items") or []
        if isinstance(items, list) and len(items) > 20:
            raise ApiError(400, "Invalid 'items': array too long. Expected an array with maximum "
                           f"length 20, but got an array with length {len(items)} instead.",
                           param="items", code="array_above_max_length")
        conv = Conversation(_rand_id("conv_", 40), now(), dict(body.get("metadata") or {}))
        conv.items = self._input_items(items, "items")
        self.conversations[conv.id] = conv
        return conv.obj()

    async def _conv_get(self, request: web.Request, cid: str) -> Json:
        return self._conv(cid).obj()

    async def _conv_update(self, request: web.Request, cid: str) -> Json:
        conv = self._conv(cid)
        body = self.body(request, {"metadata"}, ("metadata",))
        conv.metadata = dict(body["metadata"] or {})
        return conv.obj()

    async def _conv_delete(self, request: web.Request, cid: str) -> Json:
        self._conv(cid).deleted = True
        return {"id": cid, "object": "conversation.deleted", "deleted": True}

    async def _conv_items_create(self, request: web.Request, cid: str) -> Json:
        conv = self._conv(cid)
        body = self.body(request, {"items"}, ("items",))
        items = body["items"]
        if isinstance(items, list) and len(items) > 20:
            raise ApiError(400, "Invalid 'items': array too long. Expected an array with maximum "
                           f"length 20, but got an array with length {len(items)} instead.",
                           param="items", code="array_above_max_length")
        added = self._input_items(items, "items")
        conv.items.extend(added)
        return {"object": "list", "data": added, "first_id": added[0]["id"] if added else None,
                "last_id": added[-1]["id"] if added else None, "has_more": False}

    async def _conv_items_list(self, request: web.Request, cid: str) -> Json:
        return self.page(self._conv(cid).items, request)

    # ----------------------------------------------------------------- responses

    def _check_tools(self, tools: Any) -> tuple[Container | None, Json | None, list[str]]:
        """Validate tools; returns (container, auto-container spec, vector store ids)."""
        if tools is None:
            return None, None, []
        if not isinstance(tools, list):
            raise _invalid_type("tools", "an array", tools)
        container: Container | None = None
        auto: Json | None = None
        stores: list[str] = []
        for i, tool in enumerate(tools):
            p = f"tools[{i}]"
            if not isinstance(tool, dict):
                raise _invalid_type(p, "an object", tool)
            kind = tool.get("type")
            if kind not in TOOL_TYPES:
                raise _invalid_value(f"{p}.type", kind, TOOL_TYPES)
            if kind == "code_interpreter":
                for key in tool:
                    if key not in ("type", "container", "allowed_callers"):
                        raise unknown_parameter(f"{p}.{key}")
                if "container" not in tool:
                    raise _missing(f"{p}.container")
                spec = tool["container"]
                if isinstance(spec, str):
                    container = self._container(spec)
                elif isinstance(spec, dict):
                    for key in spec:
                        if key not in ("type", "file_ids", "memory_limit", "network_policy"):
                            raise unknown_parameter(f"{p}.container.{key}")
                    if spec.get("type") != "auto":
                        raise _invalid_value(f"{p}.container.type", spec.get("type"), ("auto",))
                    for fid in spec.get("file_ids") or []:
                        self._file(fid)
                    auto = spec
                else:
                    raise _invalid_type(f"{p}.container", "a string or object", spec)
            elif kind == "file_search":
                for key in tool:
                    if key not in ("type", "vector_store_ids", "filters", "max_num_results",
                                   "ranking_options"):
                        raise unknown_parameter(f"{p}.{key}")
                ids = tool.get("vector_store_ids")
                if ids is None:
                    raise _missing(f"{p}.vector_store_ids")
                if not isinstance(ids, list):
                    raise _invalid_type(f"{p}.vector_store_ids", "an array", ids)
                for vid in ids:
                    if vid not in self.vector_stores:
                        raise ApiError(400, f"Vector store with id '{vid}' not found.",
                                       param=f"{p}.vector_store_ids")
                stores.extend(ids)
        return container, auto, stores

    async def _response_create(self, request: web.Request) -> web.StreamResponse:
        body = self.body(request, RESPONSE_PARAMS)
        model = body.get("model")
        if model is None:
            raise _missing("model")
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        self.owner._model_exists(model)
        for key in ("instructions",):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise _invalid_type(key, "a string", body[key])
        for key in ("stream", "background", "store"):
            if body.get(key) is not None and not isinstance(body[key], bool):
                raise _invalid_type(key, "a boolean", body[key])
        mot = body.get("max_output_tokens")
        if mot is not None and (not isinstance(mot, int) or mot < 16):
            raise ApiError(400, f"Invalid 'max_output_tokens': integer below minimum value. "
                           f"Expected a value >= 16, but got {mot} instead.",
                           param="max_output_tokens", code="integer_below_min_value")
        for inc in body.get("include") or []:
            if inc not in INCLUDABLE:
                raise _invalid_value("include", inc, INCLUDABLE)
        background = bool(body.get("background"))
        if background and body.get("store") is False:
            raise ApiError(400, "Background mode requires 'store' to be true.",
                           param="background")
        conv: Conversation | None = None
        ref = body.get("conversation")
        if ref is not None:
            if body.get("previous_response_id"):
                raise ApiError(400, "Mutually exclusive parameters: Ensure you are only "
                               "providing one of: 'previous_response_id' or 'conversation'.",
                               param="conversation", code="mutually_exclusive_parameters")
            cid = ref.get("id") if isinstance(ref, dict) else ref
            if not isinstance(cid, str):
                raise _invalid_type("conversation", "a string", ref)
            conv = self._conv(cid)
        container, auto, stores = self._check_tools(body.get("tools"))
        inp = body.get("input")
        if inp is None and conv is None and not body.get("previous_response_id"):
            raise _missing("input")
        items = ([] if inp is None else
                 self._input_items([{"role": "user", "content": inp}] if isinstance(inp, str)
                                   else inp, "input"))
        if auto is not None:
            container = Container(_rand_id("cntr_", 40), "auto", now())
            for fid in auto.get("file_ids") or []:
                f = self.files[fid]
                self._put(container, f.filename, f.data, "user")
            self.containers[container.id] = container
        turn = self.turns.popleft() if self.turns else Turn(text=self._default_text(items))
        rid = _rand_id("resp_", 48)
        obj = self._response_obj(rid, body, model, conv, background)
        rec = ResponseRec(obj, background)
        self.responses[rid] = rec
        if conv is not None:
            conv.items.extend(items)
        prompt_tokens = self._prompt_tokens(body, conv, items)
        plan = self._plan(rec, turn, container, stores, prompt_tokens, body)
        if body.get("stream"):
            return await self._stream(request, rec, plan, conv)
        if background:
            rec.task = asyncio.create_task(self._apply(rec, plan, conv))
            return web.json_response(dict(obj))
        await self._apply(rec, plan, conv)
        return web.json_response(rec.obj)

    @staticmethod
    def _default_text(items: list[Json]) -> str:
        texts = [p.get("text", "") for it in items if it.get("role") == "user"
                 for p in it.get("content", []) if p.get("type") == "input_text"]
        return f"echo: {texts[-1] if texts else ''}"

    def _prompt_tokens(self, body: Json, conv: Conversation | None, items: list[Json]) -> int:
        text = str(body.get("instructions") or "")
        for it in [*(conv.items if conv else []), *items]:
            for p in it.get("content", []) or []:
                text += str(p.get("text", "")) if isinstance(p, dict) else ""
        return count_tokens(text) + 8

    def _response_obj(self, rid: str, body: Json, model: str, conv: Conversation | None,
                      background: bool) -> Json:
        tools = []
        for t in body.get("tools") or []:
            t = dict(t)
            if t.get("type") == "file_search":
                t.setdefault("filters", None)
                t.setdefault("max_num_results", 20)
                t.setdefault("ranking_options", {"ranker": "auto", "score_threshold": 0.0})
            tools.append(t)
        return {
            "id": rid, "object": "response", "created_at": now(),
            "status": "queued" if background else "in_progress", "background": background,
            "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
            "model": model, "output": [], "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "conversation": {"id": conv.id} if conv else None,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
            "store": body.get("store", True), "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_p": 1.0,
            "truncation": "disabled", "usage": None, "user": None,
            "metadata": body.get("metadata") or {},
        }

    def _plan(self, rec: ResponseRec, turn: Turn, container: Container | None,
              stores: list[str], prompt_tokens: int, body: Json) -> Plan:
        """The event sequence of one response; `final` mutations happen as events apply."""
        plan = Plan()
        obj = rec.obj
        include = body.get("include") or []
        ev = plan.events
        outputs: list[Json] = []

        def snapshot(status: str) -> Json:
            return {**obj, "status": status, "output": [dict(o) for o in outputs]}

        if rec.background:
            ev.append({"type": "response.queued", "response": snapshot("queued")})
        ev.append({"type": "response.in_progress", "response": snapshot("in_progress")})
        index = 0
        if turn.search is not None and stores:
            item_id = _rand_id("fs_", 40)
            item = {"id": item_id, "type": "file_search_call", "status": "in_progress",
                    "queries": [], "results": None}
            ev.append({"type": "response.output_item.added", "output_index": index,
                       "item": dict(item)})
            for kind in ("in_progress", "searching", "completed"):
                ev.append({"type": f"response.file_search_call.{kind}", "output_index": index,
                           "item_id": item_id})
            results = None
            if "file_search_call.results" in include:
                results = [{"file_id": fid, "filename": self.files[fid].filename, "score": 0.9,
                            "text": self.files[fid].data[:200].decode("utf-8", "replace"),
                            "attributes": {}}
                           for vid in stores for fid, vf in self.vector_stores[vid].files.items()
                           if vf.status == "completed" and fid in self.files]
            done = {**item, "status": "completed", "queries": list(turn.search),
                    "results": results}
            ev.append({"type": "response.output_item.done", "output_index": index,
                       "item": done})
            outputs.append(done)
            index += 1
        produced: list[ContainerFile] = []
        if turn.code is not None and container is not None:
            item_id = _rand_id("ci_", 40)
            item = {"id": item_id, "type": "code_interpreter_call", "status": "in_progress",
                    "code": "", "container_id": container.id, "outputs": None}
            ev.append({"type": "response.output_item.added", "output_index": index,
                       "item": dict(item)})
            ev.append({"type": "response.code_interpreter_call.in_progress",
                       "output_index": index, "item_id": item_id})
            step = max(1, self.owner.chunk_size * 4)
            for start in range(0, len(turn.code), step):
                ev.append({"type": "response.code_interpreter_call_code.delta",
                           "output_index": index, "item_id": item_id,
                           "delta": turn.code[start:start + step]})
            ev.append({"type": "response.code_interpreter_call_code.done",
                       "output_index": index, "item_id": item_id, "code": turn.code})
            ev.append({"type": "response.code_interpreter_call.interpreting",
                       "output_index": index, "item_id": item_id})
            for name, data in turn.files.items():
                produced.append(self._put(container, name, data, "assistant"))
            outs = None
            if "code_interpreter_call.outputs" in include:
                outs = [{"type": "logs", "logs": turn.logs}] if turn.logs else []
            ev.append({"type": "response.code_interpreter_call.completed",
                       "output_index": index, "item_id": item_id})
            done = {**item, "status": "completed", "code": turn.code, "outputs": outs}
            ev.append({"type": "response.output_item.done", "output_index": index, "item": done})
            outputs.append(done)
            index += 1
        if turn.status == "expired":
            raise AssertionError("Turn(status='expired') is for assistants runs only")
        if turn.hold is not None:
            ev.append(turn.hold)
        if turn.hang:
            ev.append(rec.cancelled)
        if turn.status == "failed":
            code, message = turn.error
            final = {**snapshot("failed"), "error": {"code": code, "message": message}}
            ev.append({"type": "response.failed", "response": final})
            return plan
        text = turn.text
        if turn.status == "incomplete":
            text = text[: max(1, len(text) // 2)]
        annotations = self._annotations(text, produced, turn.cite, container)
        msg_id = _rand_id("msg_", 40)
        msg = {"id": msg_id, "type": "message", "role": "assistant", "status": "in_progress",
               "content": []}
        ev.append({"type": "response.output_item.added", "output_index": index,
                   "item": dict(msg)})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ev.append({"type": "response.content_part.added", "output_index": index,
                   "item_id": msg_id, "content_index": 0, "part": dict(part)})
        size = max(1, self.owner.chunk_size)
        for start in range(0, len(text), size):
            ev.append({"type": "response.output_text.delta", "output_index": index,
                       "item_id": msg_id, "content_index": 0,
                       "delta": text[start:start + size], "logprobs": []})
        for k, ann in enumerate(annotations):
            ev.append({"type": "response.output_text.annotation.added", "output_index": index,
                       "item_id": msg_id, "content_index": 0, "annotation_index": k,
                       "annotation": ann})
        ev.append({"type": "response.output_text.done", "output_index": index,
                   "item_id": msg_id, "content_index": 0, "text": text, "logprobs": []})
        part = {**part, "text": text, "annotations": annotations}
        ev.append({"type": "response.content_part.done", "output_index": index,
                   "item_id": msg_id, "content_index": 0, "part": part})
        status = "incomplete" if turn.status == "incomplete" else "completed"
        done_msg = {**msg, "status": status, "content": [part]}
        ev.append({"type": "response.output_item.done", "output_index": index,
                   "item": done_msg})
        outputs.append(done_msg)
        out_tokens = count_tokens(text + (turn.code or ""))
        usage = {"input_tokens": prompt_tokens,
                 "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                 "output_tokens": out_tokens,
                 "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt_tokens + out_tokens}
        final = {**snapshot(status), "usage": usage, "completed_at": now()
                 if status == "completed" else None}
        if status == "incomplete":
            final["incomplete_details"] = {"reason": turn.incomplete_reason}
        ev.append({"type": f"response.{status}", "response": final})
        return plan

    def _annotations(self, text: str, produced: list[ContainerFile], cite: list[str],
                     container: Container | None) -> list[Json]:
        out: list[Json] = []
        linked: set[str] = set()
        for m in SANDBOX_LINK.finditer(text):
            cf = container.by_path(m.group(2)) if container else None
            if cf is None:
                continue
            linked.add(cf.id)
            out.append({"type": "container_file_citation", "container_id": cf.container_id,
                        "file_id": cf.id, "filename": cf.path.rsplit("/", 1)[-1],
                        "start_index": m.start(), "end_index": m.end()})
        for cf in produced:
            if cf.id not in linked:
                out.append({"type": "container_file_citation", "container_id": cf.container_id,
                            "file_id": cf.id, "filename": cf.path.rsplit("/", 1)[-1],
                            "start_index": len(text), "end_index": len(text)})
        for name in cite:
            f = next((f for f in self.files.values() if f.filename == name), None)
            if f is not None:
                out.append({"type": "file_citation", "file_id": f.id, "filename": name,
                            "index": len(text)})
        return out

    def _finish(self, rec: ResponseRec, final: Json, conv: Conversation | None) -> None:
        if rec.obj["status"] == "cancelled":
            return
        rec.obj.update(final)
        if conv is not None and final.get("status") in ("completed", "incomplete"):
            conv.items.extend(dict(o) for o in final["output"])
        rec.done.set()

    async def _wait(self, rec: ResponseRec, gate: asyncio.Event) -> bool:
        """Wait on a hold/hang gate; False when cancelled or the fake stops meanwhile."""
        waits = {asyncio.ensure_future(gate.wait()),
                 asyncio.ensure_future(rec.cancelled.wait()),
                 asyncio.ensure_future(self.owner._stopping.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return not rec.cancelled.is_set() and not self.owner._stopping.is_set()

    async def _apply(self, rec: ResponseRec, plan: Plan, conv: Conversation | None) -> None:
        for event in plan.events:
            if isinstance(event, asyncio.Event):
                if not await self._wait(rec, event):
                    return
                continue
            if event["type"] in ("response.completed", "response.failed",
                                 "response.incomplete"):
                self._finish(rec, event["response"], conv)
            elif event["type"].startswith("response.") and "response" in event:
                rec.obj["status"] = event["response"]["status"]

    async def _stream(self, request: web.Request, rec: ResponseRec, plan: Plan,
                      conv: Conversation | None) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": _rand_id("req_", 32), "openai-version": "2020-10-01"})
        await resp.prepare(request)
        seq = 0

        async def send(event: Json) -> None:
            nonlocal seq
            payload = {**event, "sequence_number": seq}
            seq += 1
            await resp.write(f"event: {event['type']}\n".encode() + _sse(payload))

        try:
            await send({"type": "response.created", "response": dict(rec.obj)})
            for event in plan.events:
                if isinstance(event, asyncio.Event):
                    if not await self._wait(rec, event):
                        break
                    continue
                if rec.obj["status"] == "cancelled":
                    break
                if event["type"] in ("response.completed", "response.failed",
                                     "response.incomplete"):
                    self._finish(rec, event["response"], conv)
                elif "response" in event:
                    rec.obj["status"] = event["response"]["status"]
                await send(event)
            await resp.write_eof()
        except ConnectionResetError:
            self._client_left(rec)
        except asyncio.CancelledError:
            self._client_left(rec)
            raise
        return resp

    @staticmethod
    def _client_left(rec: ResponseRec) -> None:
        """A foreground response dies with its stream; a background one goes on."""
        log.info("FakeOpenAI: client left a response stream")
        if not rec.background and rec.obj["status"] in ("queued", "in_progress"):
            rec.obj["status"] = "cancelled"
            rec.cancelled.set()

    def _response(self, rid: str) -> ResponseRec:
        rec = self.responses.get(rid)
        if rec is None:
            raise not_found(f"Response with id '{rid}' not found.")
        return rec

    async def _response_get(self, request: web.Request, rid: str) -> Json:
        return self._response(rid).obj

    async def _response_delete(self, request: web.Request, rid: str) -> Json:
        self._response(rid)
        del self.responses[rid]
        return {"id": rid, "object": "response.deleted", "deleted": True}

    async def _response_cancel(self, request: web.Request, rid: str) -> Json:
        rec = self._response(rid)
        if not rec.background:
            raise ApiError(400, "Only responses created with background=true can be "
                           "cancelled.", param="response_id")
        if rec.obj["status"] in ("queued", "in_progress"):
            rec.obj["status"] = "cancelled"
            rec.cancelled.set()
            rec.done.set()
        return rec.obj

    async def stop(self) -> None:
        """Stop background work (the fake is shutting down)."""
        for rec in self.responses.values():
            if rec.task is not None:
                rec.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await rec.task
        await self.legacy.stop()


def as_json(obj: Any) -> str:
    """Compact JSON (for debugging fake state in failing tests)."""
    return json.dumps(obj, separators=(",", ":"), default=str)
