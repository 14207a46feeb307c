"""Fake OpenAI Assistants API v2: assistants, threads, messages, runs, run steps.

Shares files and vector stores with tests/fakes/openai_assistant.py and its scripted
`Turn`s. Runs go through the real statuses (queued, in_progress, requires_action,
cancelling, cancelled, failed, completed, incomplete, expired), streamed as
`thread.run.*` / `thread.run.step.*` / `thread.message.*` events or followed by polling;
`requires_action` waits for `submit_tool_outputs`. Every request needs the
`OpenAI-Beta: assistants=v2` header, as on the real API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.openai_api import ApiError, _invalid_type, _invalid_value, _missing, _rand_id
from tests.fakes.openai_assistant import (
    SANDBOX_LINK,
    FileRec,
    Turn,
    count_tokens,
    not_found,
    now,
    unknown_parameter,
)

if TYPE_CHECKING:
    from tests.fakes.openai_assistant import AssistantAPI

Json = dict[str, Any]
Add = Callable[[str, str, Callable[..., Awaitable[Any]]], None]

ASSISTANT_PARAMS = {"model", "description", "instructions", "metadata", "name",
                    "reasoning_effort", "response_format", "temperature", "tool_resources",
                    "tools", "top_p"}
RUN_PARAMS = {"assistant_id", "additional_instructions", "additional_messages",
              "instructions", "max_completion_tokens", "max_prompt_tokens", "metadata",
              "model", "parallel_tool_calls", "reasoning_effort", "response_format", "stream",
              "temperature", "tool_choice", "tools", "top_p", "truncation_strategy"}
TERMINAL = ("completed", "failed", "cancelled", "incomplete", "expired")


@dataclass
class Thread:
    """A thread: messages and the files its tools see."""

    id: str
    created_at: int
    metadata: Json = field(default_factory=dict)
    tool_resources: Json = field(default_factory=dict)
    messages: list[Json] = field(default_factory=list)
    deleted: bool = False

    def obj(self) -> Json:
        return {"id": self.id, "object": "thread", "created_at": self.created_at,
                "metadata": self.metadata, "tool_resources": self.tool_resources}


@dataclass
class RunRec:
    """A run, its steps and what it waits for."""

    obj: Json
    steps: list[Json] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    outputs: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    tool_outputs: list[Json] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class LegacyAssistants:
    """The Assistants API v2 on top of the shared files and vector stores."""

    def __init__(self, api: AssistantAPI) -> None:
        self.api = api
        self.assistants: dict[str, Json] = {}
        self.threads: dict[str, Thread] = {}
        self.runs: dict[str, RunRec] = {}

    def mount(self, add: Add) -> None:
        """Register the routes."""
        beta = self._beta
        add("POST", r"/assistants", beta(self._assistant_create))
        add("GET", r"/assistants/(?P<aid>[^/]+)", beta(self._assistant_get))
        add("POST", r"/assistants/(?P<aid>[^/]+)", beta(self._assistant_update))
        add("DELETE", r"/assistants/(?P<aid>[^/]+)", beta(self._assistant_delete))
        add("POST", r"/threads", beta(self._thread_create))
        add("GET", r"/threads/(?P<tid>[^/]+)", beta(self._thread_get))
        add("POST", r"/threads/(?P<tid>[^/]+)", beta(self._thread_update))
        add("DELETE", r"/threads/(?P<tid>[^/]+)", beta(self._thread_delete))
        add("POST", r"/threads/(?P<tid>[^/]+)/messages", beta(self._message_create))
        add("GET", r"/threads/(?P<tid>[^/]+)/messages", beta(self._message_list))
        add("POST", r"/threads/(?P<tid>[^/]+)/runs", beta(self._run_create))
        add("GET", r"/threads/(?P<tid>[^/]+)/runs/(?P<rid>[^/]+)", beta(self._run_get))
        add("POST", r"/threads/(?P<tid>[^/]+)/runs/(?P<rid>[^/]+)/cancel",
            beta(self._run_cancel))
        add("POST", r"/threads/(?P<tid>[^/]+)/runs/(?P<rid>[^/]+)/submit_tool_outputs",
            beta(self._submit))
        add("GET", r"/threads/(?P<tid>[^/]+)/runs/(?P<rid>[^/]+)/steps", beta(self._steps))

    @staticmethod
    def _beta(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def checked(request: web.Request, **kw: Any) -> Any:
            if request.headers.get("OpenAI-Beta", "") != "assistants=v2":
                raise ApiError(400, "You must provide the 'OpenAI-Beta' header to access the "
                               "Assistants API. Please try again by setting the header "
                               "'OpenAI-Beta: assistants=v2'.", code="invalid_beta")
            return await fn(request, **kw)

        return checked

    async def stop(self) -> None:
        """Stop background runs."""
        for run in self.runs.values():
            if run.task is not None:
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task

    # ----------------------------------------------------------------- validation

    def _tools(self, tools: Any, param: str = "tools") -> list[Json]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise _invalid_type(param, "an array", tools)
        out = []
        for i, t in enumerate(tools):
            kind = t.get("type") if isinstance(t, dict) else None
            if kind not in ("code_interpreter", "file_search", "function"):
                raise _invalid_value(f"{param}[{i}].type", kind,
                                     ("code_interpreter", "file_search", "function"))
            out.append(dict(t))
        return out

    def _resources(self, res: Any) -> Json:
        if res is None:
            return {}
        if not isinstance(res, dict):
            raise _invalid_type("tool_resources", "an object", res)
        for key in res:
            if key not in ("code_interpreter", "file_search"):
                raise unknown_parameter(f"tool_resources.{key}")
        ci = res.get("code_interpreter") or {}
        ids = ci.get("file_ids") or []
        if len(ids) > 20:
            raise ApiError(400, "Invalid 'tool_resources.code_interpreter.file_ids': array too "
                           f"long. Expected an array with maximum length 20, but got an array "
                           f"with length {len(ids)} instead.",
                           param="tool_resources.code_interpreter.file_ids",
                           code="array_above_max_length")
        for fid in ids:
            self.api._file(fid)
        for vid in (res.get("file_search") or {}).get("vector_store_ids") or []:
            self.api._vs(vid)
        return {"code_interpreter": {"file_ids": list(ids)},
                "file_search": {"vector_store_ids": list(
                    (res.get("file_search") or {}).get("vector_store_ids") or [])}}

    def _message(self, thread: Thread, m: Any, param: str, *, run_id: str | None = None
                 ) -> Json:
        if not isinstance(m, dict):
            raise _invalid_type(param, "an object", m)
        for key in m:
            if key not in ("role", "content", "attachments", "metadata"):
                raise unknown_parameter(f"{param}.{key}")
        if m.get("role") not in ("user", "assistant"):
            raise _invalid_value(f"{param}.role", m.get("role"), ("user", "assistant"))
        content = m.get("content")
        if content is None:
            raise _missing(f"{param}.content")
        if isinstance(content, str):
            blocks = [{"type": "text", "text": {"value": content, "annotations": []}}]
        elif isinstance(content, list):
            blocks = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    blocks.append({"type": "text",
                                   "text": {"value": part.get("text", ""), "annotations": []}})
                else:
                    blocks.append(part)
        else:
            raise _invalid_type(f"{param}.content", "a string or array", content)
        return {"id": _rand_id("msg_", 24), "object": "thread.message", "created_at": now(),
                "thread_id": thread.id, "role": m["role"], "content": blocks,
                "assistant_id": None, "run_id": run_id, "attachments": m.get("attachments") or [],
                "metadata": m.get("metadata") or {}, "status": "completed",
                "completed_at": now(), "incomplete_at": None, "incomplete_details": None}

    # ----------------------------------------------------------------- assistants

    def _assistant(self, aid: str) -> Json:
        a = self.assistants.get(aid)
        if a is None:
            raise not_found(f"No assistant found with id '{aid}'.")
        return a

    async def _assistant_create(self, request: web.Request) -> Json:
        body = self.api.body(request, ASSISTANT_PARAMS, ("model",))
        self.api.owner._model_exists(body["model"])
        a = {"id": _rand_id("asst_", 24), "object": "assistant", "created_at": now(),
             "name": body.get("name"), "description": body.get("description"),
             "model": body["model"], "instructions": body.get("instructions"),
             "tools": self._tools(body.get("tools")),
             "tool_resources": self._resources(body.get("tool_resources")),
             "metadata": body.get("metadata") or {}, "temperature": 1.0, "top_p": 1.0,
             "response_format": "auto"}
        self.assistants[a["id"]] = a
        return a

    async def _assistant_get(self, request: web.Request, aid: str) -> Json:
        return self._assistant(aid)

    async def _assistant_update(self, request: web.Request, aid: str) -> Json:
        a = self._assistant(aid)
        body = self.api.body(request, ASSISTANT_PARAMS)
        for key, value in body.items():
            a[key] = self._tools(value) if key == "tools" else value
        return a

    async def _assistant_delete(self, request: web.Request, aid: str) -> Json:
        self._assistant(aid)
        del self.assistants[aid]
        return {"id": aid, "object": "assistant.deleted", "deleted": True}

    # ----------------------------------------------------------------- threads

    def _thread(self, tid: str) -> Thread:
        t = self.threads.get(tid)
        if t is None or t.deleted:
            raise not_found(f"No thread found with id '{tid}'.")
        return t

    async def _thread_create(self, request: web.Request) -> Json:
        body = self.api.body(request, {"messages", "metadata", "tool_resources"})
        t = Thread(_rand_id("thread_", 24), now(), dict(body.get("metadata") or {}),
                   self._resources(body.get("tool_resources")))
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise _invalid_type("messages", "an array", messages)
        t.messages = [self._message(t, m, f"messages[{i}]") for i, m in enumerate(messages)]
        self.threads[t.id] = t
        return t.obj()

    async def _thread_get(self, request: web.Request, tid: str) -> Json:
        return self._thread(tid).obj()

    async def _thread_update(self, request: web.Request, tid: str) -> Json:
        t = self._thread(tid)
        body = self.api.body(request, {"metadata", "tool_resources"})
        if "metadata" in body:
            t.metadata = dict(body["metadata"] or {})
        if "tool_resources" in body:
            t.tool_resources = self._resources(body["tool_resources"])
        return t.obj()

    async def _thread_delete(self, request: web.Request, tid: str) -> Json:
        self._thread(tid).deleted = True
        return {"id": tid, "object": "thread.deleted", "deleted": True}

    async def _message_create(self, request: web.Request, tid: str) -> Json:
        t = self._thread(tid)
        self._busy(t)
        body = self.api.body(request, {"role", "content", "attachments", "metadata"},
                             ("role", "content"))
        msg = self._message(t, body, "body")
        t.messages.append(msg)
        return msg

    async def _message_list(self, request: web.Request, tid: str) -> Json:
        t = self._thread(tid)
        run_id = request.query.get("run_id")
        data = [m for m in t.messages if run_id in (None, m["run_id"])]
        return self.api.page(data, request)

    def _busy(self, t: Thread) -> None:
        for run in self.runs.values():
            if run.obj["thread_id"] == t.id and run.obj["status"] not in TERMINAL:
                raise ApiError(400, f"Thread {t.id} already has an active run "
                               f"{run.obj['id']}.")

    # ----------------------------------------------------------------- runs

    def _run(self, tid: str, rid: str) -> RunRec:
        self._thread(tid)
        run = self.runs.get(rid)
        if run is None or run.obj["thread_id"] != tid:
            raise not_found(f"No run found with id '{rid}'.")
        return run

    async def _run_create(self, request: web.Request, tid: str) -> web.StreamResponse:
        t = self._thread(tid)
        body = self.api.body(request, RUN_PARAMS, ("assistant_id",))
        a = self._assistant(body["assistant_id"])
        self._busy(t)
        model = body.get("model") or a["model"]
        self.api.owner._model_exists(model)
        mct = body.get("max_completion_tokens")
        if mct is not None and (not isinstance(mct, int) or mct < 256):
            raise ApiError(400, "Invalid 'max_completion_tokens': expected an integer >= 256.",
                           param="max_completion_tokens", code="invalid_value")
        tools = self._tools(body["tools"]) if body.get("tools") is not None else a["tools"]
        rid = _rand_id("run_", 24)
        for i, m in enumerate(body.get("additional_messages") or []):
            t.messages.append(self._message(t, m, f"additional_messages[{i}]", run_id=None))
        obj = {"id": rid, "object": "thread.run", "created_at": now(), "thread_id": tid,
               "assistant_id": a["id"], "status": "queued", "required_action": None,
               "last_error": None, "expires_at": now() + 600, "started_at": None,
               "cancelled_at": None, "failed_at": None, "completed_at": None,
               "incomplete_details": None, "model": model,
               "instructions": body.get("instructions") or a.get("instructions") or "",
               "tools": tools, "metadata": body.get("metadata") or {}, "usage": None,
               "temperature": 1.0, "top_p": 1.0, "max_completion_tokens": mct,
               "max_prompt_tokens": None, "truncation_strategy": {"type": "auto",
                                                                  "last_messages": None},
               "incomplete_details_reason": None, "response_format": "auto",
               "tool_choice": "auto", "parallel_tool_calls": True}
        obj.pop("incomplete_details_reason")
        run = RunRec(obj)
        self.runs[rid] = run
        turn = self.api.turns.popleft() if self.api.turns else Turn(
            text="echo: " + self._last_user_text(t))
        events: asyncio.Queue[tuple[str, Json] | None] = asyncio.Queue()
        run.task = asyncio.create_task(self._drive(run, t, turn, events, body))
        if body.get("stream"):
            return await self._stream(request, run, events)
        await self._event_after_create(events)
        return web.json_response(dict(run.obj))

    @staticmethod
    async def _event_after_create(events: asyncio.Queue[tuple[str, Json] | None]) -> None:
        """A polled run: let the driver publish its first event (the created run)."""
        await events.get()

    @staticmethod
    def _last_user_text(t: Thread) -> str:
        for m in reversed(t.messages):
            if m["role"] == "user":
                return " ".join(b["text"]["value"] for b in m["content"]
                                if b.get("type") == "text")
        return ""

    async def _drive(self, run: RunRec, t: Thread, turn: Turn,
                     events: asyncio.Queue[tuple[str, Json] | None], body: Json) -> None:
        """Move a run through its statuses, publishing stream events as it goes."""
        obj = run.obj

        def emit(kind: str, data: Json) -> None:
            events.put_nowait((kind, json.loads(json.dumps(data))))

        def status(value: str) -> None:
            obj["status"] = value
            run.changed.set()
            emit(f"thread.run.{value}", obj)

        def step(kind: str, details: Json) -> Json:
            s = {"id": _rand_id("step_", 24), "object": "thread.run.step",
                 "created_at": now(), "run_id": obj["id"], "assistant_id": obj["assistant_id"],
                 "thread_id": t.id, "type": kind, "status": "in_progress",
                 "step_details": details, "last_error": None, "expired_at": None,
                 "cancelled_at": None, "failed_at": None, "completed_at": None,
                 "metadata": {}, "usage": None}
            run.steps.append(s)
            emit("thread.run.step.created", s)
            emit("thread.run.step.in_progress", s)
            return s

        def done(s: Json) -> None:
            s["status"] = "completed"
            s["completed_at"] = now()
            emit("thread.run.step.completed", s)

        async def gate(event: asyncio.Event) -> bool:
            waits = {asyncio.ensure_future(event.wait()),
                     asyncio.ensure_future(run.cancelled.wait()),
                     asyncio.ensure_future(self.api.owner._stopping.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if run.cancelled.is_set():
                emit("thread.run.cancelling", obj)
                status("cancelled")
                obj["cancelled_at"] = now()
                events.put_nowait(None)
                return False
            return not self.api.owner._stopping.is_set()

        try:
            emit("thread.run.created", obj)
            status("queued")
            obj["started_at"] = now()
            status("in_progress")
            kinds = {tool["type"] for tool in obj["tools"]}
            if turn.tool_call is not None:
                name, args = turn.tool_call
                call = {"id": _rand_id("call_", 24), "type": "function",
                        "function": {"name": name, "arguments": args}}
                s = step("tool_calls", {"type": "tool_calls", "tool_calls": [
                    {**call, "function": {**call["function"], "output": None}}]})
                obj["required_action"] = {"type": "submit_tool_outputs",
                                          "submit_tool_outputs": {"tool_calls": [call]}}
                status("requires_action")
                events.put_nowait(None)  # the stream ends; submit_tool_outputs continues it
                if not await gate(run.outputs):
                    return
                events = run.continued  # type: ignore[attr-defined]
                output = next((o.get("output") for o in run.tool_outputs
                               if o.get("tool_call_id") == call["id"]), None)
                s["step_details"]["tool_calls"][0]["function"]["output"] = output
                obj["required_action"] = None
                status("queued")
                status("in_progress")
                done(s)
            if turn.search is not None and "file_search" in kinds:
                s = step("tool_calls", {"type": "tool_calls", "tool_calls": [
                    {"id": _rand_id("call_", 24), "type": "file_search",
                     "file_search": {"ranking_options": {"ranker": "auto",
                                                         "score_threshold": 0.0},
                                     "results": []}}]})
                done(s)
            produced: list[FileRec] = []
            if turn.code is not None and "code_interpreter" in kinds:
                outputs: list[Json] = []
                if turn.logs:
                    outputs.append({"type": "logs", "logs": turn.logs})
                for name, data in turn.files.items():
                    f = FileRec(_rand_id("file-", 22), f"/mnt/data/{name}",
                                "assistants_output", data, now())
                    self.api.files[f.id] = f
                    produced.append(f)
                    if name.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".webp")):
                        outputs.append({"type": "image", "image": {"file_id": f.id}})
                s = step("tool_calls", {"type": "tool_calls", "tool_calls": [
                    {"id": _rand_id("call_", 24), "type": "code_interpreter",
                     "code_interpreter": {"input": turn.code, "outputs": outputs}}]})
                emit("thread.run.step.delta", {"id": s["id"], "object": "thread.run.step.delta",
                                               "delta": {"step_details": {
                                                   "type": "tool_calls", "tool_calls": [
                                                       {"index": 0, "type": "code_interpreter",
                                                        "code_interpreter": {
                                                            "input": turn.code}}]}}})
                done(s)
            if turn.hold is not None and not await gate(turn.hold):
                return
            if turn.hang and not await gate(asyncio.Event()):
                return
            if turn.status == "failed":
                obj["last_error"] = {"code": turn.error[0], "message": turn.error[1]}
                obj["failed_at"] = now()
                status("failed")
                events.put_nowait(None)
                return
            if turn.status == "expired":
                status("expired")
                events.put_nowait(None)
                return
            self._answer(run, t, turn, produced, emit, step, done)
            prompt = count_tokens(obj["instructions"] + " ".join(
                json.dumps(m["content"]) for m in t.messages)) + 8
            completion = count_tokens(turn.text + (turn.code or ""))
            obj["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}
            if turn.status == "incomplete":
                obj["incomplete_details"] = {"reason": "max_completion_tokens"}
                status("incomplete")
            else:
                obj["completed_at"] = now()
                status("completed")
            events.put_nowait(None)
        except asyncio.CancelledError:
            events.put_nowait(None)
            raise

    def _answer(self, run: RunRec, t: Thread, turn: Turn, produced: list[FileRec],
                emit: Callable[[str, Json], None], step: Callable[[str, Json], Json],
                done: Callable[[Json], None]) -> None:
        """The assistant message: text with file_path / file_citation annotations and
        image_file blocks for pictures the code made."""
        obj = run.obj
        text = turn.text
        if turn.status == "incomplete":
            text = text[: max(1, len(text) // 2)]
        annotations: list[Json] = []
        by_name = {f.filename.rsplit("/", 1)[-1]: f for f in produced}
        for m in SANDBOX_LINK.finditer(text):
            f = by_name.get(m.group(2).rsplit("/", 1)[-1])
            if f is not None:
                start = m.start(2) - len("sandbox:")
                annotations.append({"type": "file_path", "text": f"sandbox:{m.group(2)}",
                                    "start_index": start, "end_index": m.end(2),
                                    "file_path": {"file_id": f.id}})
        for k, name in enumerate(turn.cite):
            f = next((f for f in self.api.files.values() if f.filename == name), None)
            if f is None:
                continue
            marker = f"【{k}:0†{name}】"
            annotations.append({"type": "file_citation", "text": marker,
                                "start_index": len(text), "end_index": len(text) + len(marker),
                                "file_citation": {"file_id": f.id}})
            text += marker
        blocks: list[Json] = [{"type": "image_file", "image_file": {"file_id": f.id,
                                                                     "detail": None}}
                              for f in produced if f.filename.lower().endswith(
                                  (".png", ".jpg", ".jpeg", ".gif", ".webp"))]
        msg = {"id": _rand_id("msg_", 24), "object": "thread.message", "created_at": now(),
               "thread_id": t.id, "role": "assistant", "assistant_id": obj["assistant_id"],
               "run_id": obj["id"], "attachments": [
                   {"file_id": f.id, "tools": [{"type": "code_interpreter"}]}
                   for f in produced], "metadata": {},
               "status": "in_progress", "content": [], "completed_at": None,
               "incomplete_at": None, "incomplete_details": None}
        s = step("message_creation", {"type": "message_creation",
                                      "message_creation": {"message_id": msg["id"]}})
        emit("thread.message.created", msg)
        emit("thread.message.in_progress", msg)
        for start in range(0, len(text), 8):
            emit("thread.message.delta", {"id": msg["id"], "object": "thread.message.delta",
                                          "delta": {"content": [{"index": 0, "type": "text",
                                                                 "text": {"value": text[
                                                                     start:start + 8]}}]}})
        msg["content"] = [{"type": "text", "text": {"value": text,
                                                    "annotations": annotations}}, *blocks]
        if turn.status == "incomplete":
            msg["status"] = "incomplete"
            msg["incomplete_details"] = {"reason": "max_tokens"}
            msg["incomplete_at"] = now()
            emit("thread.message.incomplete", msg)
        else:
            msg["status"] = "completed"
            msg["completed_at"] = now()
            emit("thread.message.completed", msg)
        t.messages.append(msg)
        done(s)

    async def _stream(self, request: web.Request, run: RunRec,
                      events: asyncio.Queue[tuple[str, Json] | None]) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            while True:
                got = await events.get()
                if got is None:
                    break
                kind, data = got
                await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            await resp.write(b"event: done\ndata: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    async def _run_get(self, request: web.Request, tid: str, rid: str) -> web.Response:
        run = self._run(tid, rid)
        resp = web.json_response(run.obj)
        if run.obj["status"] not in TERMINAL:
            resp.headers["openai-poll-after-ms"] = "10"
        return resp

    async def _run_cancel(self, request: web.Request, tid: str, rid: str) -> Json:
        run = self._run(tid, rid)
        if run.obj["status"] in TERMINAL:
            raise ApiError(400, f"Cannot cancel run with status '{run.obj['status']}'.")
        run.obj["status"] = "cancelling"
        answer = dict(run.obj)
        run.cancelled.set()  # the run stops at its next gate: cancelling -> cancelled
        return answer

    async def _submit(self, request: web.Request, tid: str, rid: str) -> web.StreamResponse:
        run = self._run(tid, rid)
        body = self.api.body(request, {"tool_outputs", "stream"}, ("tool_outputs",))
        if run.obj["status"] != "requires_action":
            raise ApiError(400, f"Runs in status \"{run.obj['status']}\" do not accept tool "
                           "outputs.")
        outputs = body["tool_outputs"]
        if not isinstance(outputs, list):
            raise _invalid_type("tool_outputs", "an array", outputs)
        wanted = {c["id"] for c in run.obj["required_action"]["submit_tool_outputs"][
            "tool_calls"]}
        given = {o.get("tool_call_id") for o in outputs if isinstance(o, dict)}
        if wanted - given:
            raise ApiError(400, "Expected tool outputs for call_ids "
                           f"{sorted(wanted)}, got {sorted(given)}.", param="tool_outputs")
        run.tool_outputs = list(outputs)
        events: asyncio.Queue[tuple[str, Json] | None] = asyncio.Queue()
        run.continued = events  # type: ignore[attr-defined]
        run.outputs.set()
        if body.get("stream"):
            return await self._stream(request, run, events)
        return web.json_response(dict(run.obj, status="queued"))

    async def _steps(self, request: web.Request, tid: str, rid: str) -> Json:
        return self.api.page(self._run(tid, rid).steps, request)
