"""The legacy backend: the Assistants API v2 (for servers that still serve it).

One assistant for the bot (created once, id stored under channel "*"), one thread per
channel (anchored at the /reset marker, seeded with recent history), the channel's files
as the thread's tool resources (code interpreter file ids + the channel's vector store),
and the CJK font uploaded once and given to every thread. Runs are streamed through every
status; `requires_action` is answered with `submit_tool_outputs` saying the tool is
unavailable (the bot defines no function tools yet), so no run waits forever.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai

from bot.assistant import (
    EXPIRED,
    Active,
    Backend,
    Produced,
    RunRequest,
    RunResult,
    _detail,
    gone,
    instructions,
    rewrite_links,
    translate,
)
from bot.errors import UserError
from bot.store import WorkspaceFile

log = logging.getLogger(__name__)

THREAD = "assistants.thread"
RESOURCES = "assistants.resources"
ASSISTANT = "assistants.assistant"
MAX_CODE_FILES = 20  # the API's limit on code_interpreter file ids per thread


@contextmanager
def _legacy() -> Iterator[None]:
    """The SDK marks the Assistants API deprecated; servers still serve it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class AssistantsBackend(Backend):
    """Assistants API v2: assistant, threads, runs, run steps."""

    name = "assistants"

    async def assistant_id(self, model: str) -> str:
        """The bot's assistant (made once; the model and instructions are set per run)."""
        got = await self.store.conversation_id("*", ASSISTANT)
        if got:
            return got
        try:
            with _legacy():
                pending = self.client.beta.assistants.create(
                    model=model, name="gptbot",
                    instructions="You are a helpful assistant in a chat app.",
                    tools=[{"type": "code_interpreter"}, {"type": "file_search"}])
            a = await pending
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        await self.store.set_conversation_id("*", ASSISTANT, a.id)
        return a.id

    async def font_file(self, model: str) -> tuple[str, str] | None:
        """(file id, name) of the CJK font on the Files API, uploaded once."""
        font = await self.assistant.font()
        if font is None:
            return None
        name, data = font
        kind = f"assistants.font:{name}:{len(data)}"
        got = await self.store.conversation_id("*", kind)
        if got:
            return got, name
        try:
            f = await self.client.files.create(file=(name, data, "font/collection"),
                                               purpose="assistants")
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        await self.store.set_conversation_id("*", kind, f.id)
        return f.id, name

    async def _resources(self, channel: str, model: str,
                         files: list[WorkspaceFile]) -> tuple[dict[str, Any], str | None, bool]:
        """(tool_resources, font path, whether file search has anything to search)."""
        font = await self.font_file(model)
        code_ids = [f.remote_id for f in files][-(MAX_CODE_FILES - (1 if font else 0)):]
        if font:
            code_ids.append(font[0])
        vs_id = await self.store.conversation_id(channel, "vector_store")
        search = bool(vs_id) and any(f.searchable for f in files)
        res: dict[str, Any] = {"code_interpreter": {"file_ids": code_ids}}
        if search:
            res["file_search"] = {"vector_store_ids": [vs_id]}
        return res, f"/mnt/data/{font[0]}" if font else None, search

    async def thread(self, req: RunRequest, res: dict[str, Any], *, fresh: bool = False) -> str:
        """The channel's thread with its tool resources up to date; a new one (seeded with
        history) when there is none or /reset moved the marker."""
        anchor = await self.store.context_marker(req.channel)
        got = await self.store.conversation(req.channel, THREAD)
        signature = json.dumps(res, sort_keys=True)
        try:
            if got is not None and got[1] == anchor and not fresh:
                if await self.store.conversation_id(req.channel, RESOURCES) != signature:
                    with _legacy():
                        pending = self.client.beta.threads.update(got[0], tool_resources=res)
                    await pending
                    await self.store.set_conversation_id(req.channel, RESOURCES, signature)
                return got[0]
            messages: list[Any] = [{"role": role, "content": text}
                                   for role, text in await req.history() if text.strip()]
            with _legacy():
                pending = self.client.beta.threads.create(
                    messages=messages, tool_resources=res, metadata={"app": "gptbot"})
            t = await pending
        except openai.NotFoundError as e:
            if not fresh and gone(e, "thread"):
                return await self.thread(req, res, fresh=True)
            raise translate(e, req.model) from e
        except openai.OpenAIError as e:
            raise translate(e, req.model) from e
        await self.store.set_conversation_id(req.channel, THREAD, t.id, anchor=anchor)
        await self.store.set_conversation_id(req.channel, RESOURCES, signature)
        log.info("assistant: thread %s for %s (%d messages of history)", t.id, req.channel,
                 len(messages))
        return t.id

    async def place(self, channel: str, f: WorkspaceFile, model: str) -> None:
        """Files reach the thread's tool resources at the next run."""

    async def forget(self, channel: str, f: WorkspaceFile) -> None:
        """Files leave the thread's tool resources at the next run."""

    async def end(self, channel: str) -> None:
        """Delete the thread."""
        tid = await self.store.conversation_id(channel, THREAD)
        if tid:
            with _legacy():
                pending = self.client.beta.threads.delete(tid)
            await self._quietly(pending)
        for kind in (THREAD, RESOURCES):
            await self.store.set_conversation_id(channel, kind, None)

    async def run(self, req: RunRequest, active: Active) -> RunResult:
        """Stream a run through its statuses, answering tool calls, then collect the
        message text, citations and files."""
        files = await self.store.workspace_files(req.channel)
        res, font, search = await self._resources(req.channel, req.model, files)
        assistant_id = await self.assistant_id(req.model)
        tools: list[Any] = [{"type": "code_interpreter"}]
        if search:
            tools.append({"type": "file_search"})
        listed = [(f"/mnt/data/{f.remote_id}", f.name, f.size) for f in files]
        for attempt in range(2):
            thread_id = await self.thread(req, res, fresh=attempt > 0)
            try:
                with _legacy():
                    pending = self.client.beta.threads.runs.create(
                        thread_id, assistant_id=assistant_id, model=req.model,
                        instructions=instructions(req.persona, listed, search=search,
                                                  font=font, code=req.code),
                        additional_messages=[{"role": "user", "content": req.text}],
                        tools=tools, stream=True,
                        timeout=self.config.assistant.run_timeout + 10)
                stream = await pending
                break
            except openai.OpenAIError as e:
                if attempt == 0 and gone(e, "thread"):
                    continue
                if attempt == 0 and gone(e, "assistant"):
                    await self.store.set_conversation_id("*", ASSISTANT, None)
                    assistant_id = await self.assistant_id(req.model)
                    continue
                raise translate(e, req.model) from e
        active.thread_id = thread_id
        return await self._follow(req, active, stream)

    async def _follow(self, req: RunRequest, active: Active, stream: Any) -> RunResult:
        messages: list[Any] = []
        calls: dict[str, str] = {}
        final: Any = None
        while stream is not None:
            follow_up = None
            try:
                async for event in stream:
                    kind, data = event.event, event.data
                    if kind == "thread.run.created":
                        active.run_id = data.id
                    elif kind == "thread.run.queued":
                        req.progress("queued")
                    elif kind == "thread.run.in_progress":
                        req.progress("thinking")
                    elif kind.startswith("thread.run.step.") and kind != "thread.run.step.delta":
                        details = data.step_details
                        if details.type == "tool_calls":
                            for call in details.tool_calls:
                                calls[call.id] = call.type
                                if call.type == "code_interpreter":
                                    req.progress("code")
                                elif call.type == "file_search":
                                    req.progress("search")
                    elif kind == "thread.message.delta":
                        req.progress("writing")
                    elif kind in ("thread.message.completed", "thread.message.incomplete"):
                        messages.append(data)
                    elif kind == "thread.run.requires_action":
                        follow_up = await self._answer_tools(req, active, data)
                    elif kind in ("thread.run.completed", "thread.run.failed",
                                  "thread.run.incomplete", "thread.run.expired",
                                  "thread.run.cancelled"):
                        final = data
            except openai.APIError as e:
                raise UserError(f"⚠️ The assistant run failed: {_detail(e)}.") from e
            finally:
                await stream.close()
            stream = follow_up
        if final is None:
            raise UserError("⚠️ The assistant run ended without a result. Please try again.")
        return await self._result(req, final, messages, calls)

    async def _answer_tools(self, req: RunRequest, active: Active, run: Any) -> Any:
        """No function tools exist yet: say so, so the run goes on instead of waiting."""
        action = run.required_action
        outputs: list[Any] = []
        for call in action.submit_tool_outputs.tool_calls if action else []:
            log.info("assistant: run %s asked for tool %s; answering unavailable", run.id,
                     call.function.name)
            outputs.append({"tool_call_id": call.id, "output": json.dumps(
                {"error": f"the tool {call.function.name!r} is not available"})})
        try:
            with _legacy():
                pending = self.client.beta.threads.runs.submit_tool_outputs(
                    run.id, thread_id=run.thread_id, tool_outputs=outputs, stream=True,
                    timeout=self.config.assistant.run_timeout + 10)
            return await pending
        except openai.OpenAIError as e:
            raise translate(e, req.model) from e

    async def _result(self, req: RunRequest, run: Any, messages: list[Any],
                      calls: dict[str, str]) -> RunResult:
        if run.status == "failed":
            detail = run.last_error.message if run.last_error else "unknown error"
            raise UserError(f"⚠️ The assistant run failed: {_detail(Exception(detail))}.")
        if run.status == "expired":
            raise UserError(EXPIRED)
        if run.status == "cancelled":
            raise UserError("⏹ The run was cancelled on the AI server.")
        result = RunResult(text="", model=run.model or req.model)
        if run.usage is not None:
            result.input_tokens = run.usage.prompt_tokens
            result.output_tokens = run.usage.completion_tokens
        if run.status == "incomplete":
            reason = getattr(run.incomplete_details, "reason", None) or "unknown reason"
            result.incomplete = ("it hit the length limit" if "tokens" in str(reason)
                                 else str(reason).replace("_", " "))
        result.code_calls = sum(1 for t in calls.values() if t == "code_interpreter")
        result.search_calls = sum(1 for t in calls.values() if t == "file_search")
        names = {f.remote_id: f.name for f in await self.store.workspace_files(req.channel)}
        wanted: dict[str, str] = {}
        texts: list[str] = []
        for msg in messages:
            for block in msg.content:
                if block.type == "image_file":
                    fid = block.image_file.file_id
                    wanted.setdefault(fid, f"image-{len(wanted) + 1}.png")
                elif block.type == "text":
                    text = block.text.value
                    for ann in block.text.annotations or []:
                        if ann.type == "file_path":
                            wanted[ann.file_path.file_id] = ann.text.rsplit("/", 1)[-1]
                        elif ann.type == "file_citation":
                            name = names.get(ann.file_citation.file_id, "a file")
                            if name not in result.sources:
                                result.sources.append(name)
                            text = text.replace(ann.text, "")
                    texts.append(rewrite_links(text, []))
        result.text = "\n\n".join(t for t in texts if t.strip())
        result.files = await self._download(wanted)
        if result.code_calls:
            await self.assistant.record_session()
        return result

    async def _download(self, wanted: dict[str, str]) -> list[Produced]:
        out: list[Produced] = []
        for fid, name in wanted.items():
            try:
                content = await self.client.files.content(fid)
            except openai.OpenAIError as e:
                log.warning("assistant: cannot download %s: %s", name, _detail(e))
                continue
            out.append(Produced(name, content.content))
        return out

    async def cancel(self, active: Active) -> None:
        """runs.cancel."""
        if active.run_id is not None and active.thread_id is not None:
            with _legacy():
                pending = self.client.beta.threads.runs.cancel(active.run_id,
                                                               thread_id=active.thread_id)
            await pending
