"""The Responses backend: Conversations + a code-interpreter container + a vector store.

Per channel the store keeps a conversation id (`responses.conversation`, anchored at the
channel's /reset marker), a container id (`responses.container`, holding the channel's
files and the CJK font) and a vector store id (`vector_store`). Runs are background
responses streamed as they go, so a run can be cancelled (`responses.cancel`) and its
progress shown. An expired container (OpenAI expires idle ones after ~20 minutes) is
re-created with the files re-attached and the request sent again, unnoticed by the user.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
from openai import AsyncStream

from bot.assistant import (
    Active,
    Backend,
    Produced,
    RunRequest,
    RunResult,
    _detail,
    gone,
    instructions,
    rewrite_links,
    sandbox_paths,
    translate,
)
from bot.errors import UserError
from bot.store import WorkspaceFile

log = logging.getLogger(__name__)

CONVERSATION = "responses.conversation"
CONTAINER = "responses.container"
FONT = "responses.font"
SEED_BATCH = 20  # the Conversations API takes at most 20 items per call
POLL_INTERVAL = 1.0


class ResponsesBackend(Backend):
    """Responses API with Conversations, containers and vector stores."""

    name = "responses"

    # --- the container -------------------------------------------------------------------

    async def font_file(self, model: str) -> tuple[str, str] | None:
        """(file id, name) of the CJK font on the Files API, uploaded once per bot."""
        font = await self.assistant.font()
        if font is None:
            return None
        name, data = font
        kind = f"font:{name}:{len(data)}"
        got = await self.store.conversation_id("*", kind)
        if got:
            return got, name
        try:
            f = await self.client.files.create(file=(name, data, "font/collection"),
                                               purpose="user_data")
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        await self.store.set_conversation_id("*", kind, f.id)
        return f.id, name

    async def container(self, channel: str, model: str) -> tuple[str, bool]:
        """The channel's container id, made with the files and the font when there is none;
        (id, whether it was made now)."""
        got = await self.store.conversation_id(channel, CONTAINER)
        if got:
            return got, False
        cfg = self.config.assistant
        files = await self.store.workspace_files(channel)
        for attempt in range(2):
            font = await self.font_file(model)
            ids = [f.remote_id for f in files] + ([font[0]] if font else [])
            try:
                c = await self.client.containers.create(
                    name=f"gptbot {channel}"[:200], file_ids=ids,
                    expires_after={"anchor": "last_active_at",
                                   "minutes": cfg.container_minutes})
                break
            except openai.NotFoundError as e:
                if attempt == 0 and font is not None and font[0] in str(e.message):
                    # the font upload is gone from the server: upload it again
                    await self.store.forget_conversations("*", "font:")
                    continue
                raise translate(e, model) from e
            except openai.OpenAIError as e:
                raise translate(e, model) from e
        try:
            paths = {cf.path.rsplit("/", 1)[-1]: (cf.id, cf.path)
                     async for cf in self.client.containers.files.list(c.id)}
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        for f in files:
            cid_path = paths.get(f.name)
            await self.store.set_container_file(channel, f.id, cid_path[0] if cid_path else None,
                                                cid_path[1] if cid_path else None)
        font_path = (paths.get(font[1], ("", f"/mnt/data/{font[1]}"))[1] if font else None)
        await self.store.set_conversation_id(channel, FONT, font_path)
        await self.store.set_conversation_id(channel, CONTAINER, c.id)
        await self.assistant.record_session()
        log.info("assistant: container %s for %s", c.id, channel)
        return c.id, True

    async def place(self, channel: str, f: WorkspaceFile, model: str) -> None:
        """Copy the file into the channel's container (re-made if it expired)."""
        for attempt in range(2):
            cid, made = await self.container(channel, model)
            if made:
                return  # made with every workspace file, this one included
            try:
                cf = await self.client.containers.files.create(cid, file_id=f.remote_id)
            except openai.OpenAIError as e:
                if attempt == 0 and gone(e, "container"):
                    await self.store.set_conversation_id(channel, CONTAINER, None)
                    continue
                raise translate(e, model) from e
            await self.store.set_container_file(channel, f.id, cf.id, cf.path)
            return

    async def forget(self, channel: str, f: WorkspaceFile) -> None:
        """Delete the file's copy in the container (an expired one has none)."""
        cid = await self.store.conversation_id(channel, CONTAINER)
        if cid and f.container_file_id:
            try:
                await self.client.containers.files.delete(f.container_file_id,
                                                          container_id=cid)
            except openai.OpenAIError as e:
                if not gone(e, "container") and not isinstance(e, openai.NotFoundError):
                    log.warning("assistant: could not delete a container file: %s", _detail(e))

    async def end(self, channel: str) -> None:
        """Delete the conversation and the container."""
        conv = await self.store.conversation_id(channel, CONVERSATION)
        if conv:
            await self._quietly(self.client.conversations.delete(conv))
        cid = await self.store.conversation_id(channel, CONTAINER)
        if cid:
            await self._quietly(self.client.containers.delete(cid))
        for kind in (CONVERSATION, CONTAINER, FONT):
            await self.store.set_conversation_id(channel, kind, None)

    # --- the conversation ----------------------------------------------------------------

    async def conversation(self, req: RunRequest, *, fresh: bool = False) -> str:
        """The channel's conversation, started (seeded with recent history) when there is
        none or /reset moved the history marker since."""
        anchor = await self.store.context_marker(req.channel)
        got = await self.store.conversation(req.channel, CONVERSATION)
        if got is not None and got[1] == anchor and not fresh:
            return got[0]
        items: list[Any] = [{"type": "message", "role": role, "content": text}
                            for role, text in await req.history() if text.strip()]
        try:
            conv = await self.client.conversations.create(
                items=items[:SEED_BATCH], metadata={"app": "gptbot"})
            for start in range(SEED_BATCH, len(items), SEED_BATCH):
                await self.client.conversations.items.create(
                    conv.id, items=items[start:start + SEED_BATCH])
        except openai.OpenAIError as e:
            raise translate(e, req.model) from e
        await self.store.set_conversation_id(req.channel, CONVERSATION, conv.id, anchor=anchor)
        log.info("assistant: conversation %s for %s (%d items of history)", conv.id,
                 req.channel, len(items))
        return conv.id

    # --- runs ----------------------------------------------------------------------------

    async def _request(self, req: RunRequest) -> tuple[Any, str]:
        """Create the streamed background response; (stream, container id)."""
        conv, _ = await asyncio.gather(
            self.conversation(req),
            self.container(req.channel, req.model))
        for attempt in range(3):
            cid, _ = await self.container(req.channel, req.model)
            files = await self.store.workspace_files(req.channel)
            vs_id = await self.store.conversation_id(req.channel, "vector_store")
            search = bool(vs_id) and any(f.searchable for f in files)
            font = await self.store.conversation_id(req.channel, FONT)
            tools: list[Any] = [{"type": "code_interpreter", "container": cid}]
            if search:
                tools.append({"type": "file_search", "vector_store_ids": [vs_id]})
            listed = [(f.container_path or f"/mnt/data/{f.name}", f.name, f.size)
                      for f in files]
            body = {
                "model": req.model, "conversation": conv,
                "input": [{"type": "message", "role": "user", "content": req.text}],
                "instructions": instructions(req.persona, listed, search=search, font=font,
                                             code=req.code),
                "tools": tools, "background": True, "stream": True, "store": True,
                "max_output_tokens": self.config.chat.max_output_tokens}
            try:
                # events as dicts through the SDK's generic post (auth, retries, errors):
                # a typed model per event costs more than the rest of the run's handling
                stream = await self.client.post(
                    "/responses", body=body, cast_to=object, stream=True,
                    stream_cls=AsyncStream[object],
                    options={"timeout": self.config.assistant.run_timeout + 10})
            except openai.OpenAIError as e:
                if attempt < 2 and gone(e, "container"):
                    log.info("assistant: container of %s expired; making a new one",
                             req.channel)
                    await self.store.set_conversation_id(req.channel, CONTAINER, None)
                    continue
                if attempt < 2 and gone(e, "conversation"):
                    log.info("assistant: conversation of %s is gone; starting a new one",
                             req.channel)
                    conv = await self.conversation(req, fresh=True)
                    continue
                raise translate(e, req.model) from e
            return stream, cid
        raise UserError("The AI server keeps refusing this request. Please try again.")

    async def run(self, req: RunRequest, active: Active) -> RunResult:
        """Stream the run's events (progress), then collect text, citations and files."""
        stream, _ = await self._request(req)
        final: dict[str, Any] | None = None
        try:
            async for event in stream:
                if not isinstance(event, dict):
                    continue
                kind = str(event.get("type", ""))
                if kind == "response.created":
                    active.run_id = event["response"]["id"]
                elif kind == "response.queued":
                    req.progress("queued")
                elif kind == "response.in_progress":
                    req.progress("thinking")
                elif kind.startswith("response.code_interpreter_call"):
                    req.progress("code")
                elif kind.startswith("response.file_search_call"):
                    req.progress("search")
                elif kind == "response.output_text.delta":
                    req.progress("writing")
                elif kind in ("response.completed", "response.failed", "response.incomplete"):
                    final = event["response"]
                elif kind == "error":
                    detail = _detail(Exception(event.get("message") or "unknown error"))
                    raise UserError(f"⚠️ The assistant run failed: {detail}.")
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            if active.run_id is None:
                raise translate(e, req.model) from e
            log.info("assistant: stream of %s dropped; polling", active.run_id)
        finally:
            await stream.close()
        if final is None or final.get("status") in ("queued", "in_progress"):
            final = await self._poll(active, req.model)
        return await self._result(req, final)

    async def _poll(self, active: Active, model: str) -> dict[str, Any]:
        """Follow a background response whose stream ended early, until it is done."""
        assert active.run_id is not None
        while True:
            try:
                resp = await self.client.get(f"/responses/{active.run_id}", cast_to=object)
            except openai.OpenAIError as e:
                raise translate(e, model) from e
            if isinstance(resp, dict) and resp.get("status") not in ("queued", "in_progress"):
                return resp
            await asyncio.sleep(POLL_INTERVAL)

    async def _result(self, req: RunRequest, resp: dict[str, Any]) -> RunResult:
        status = resp.get("status")
        if status == "failed":
            error = resp.get("error") or {}
            detail = _detail(Exception(error.get("message") or "unknown error"))
            raise UserError(f"⚠️ The assistant run failed: {detail}.")
        if status == "cancelled":
            raise UserError("⏹ The run was cancelled on the AI server.")
        result = RunResult(text="", model=str(resp.get("model") or req.model))
        usage = resp.get("usage") or {}
        result.input_tokens = int(usage.get("input_tokens") or 0)
        result.output_tokens = int(usage.get("output_tokens") or 0)
        if status == "incomplete":
            reason = str((resp.get("incomplete_details") or {}).get("reason")
                         or "unknown reason")
            result.incomplete = {"max_output_tokens": "it hit the length limit",
                                 "content_filter": "the content filter stopped it"}.get(
                                     reason, reason.replace("_", " "))
        own = {f.container_file_id for f in await self.store.workspace_files(req.channel)}
        font = await self.store.conversation_id(req.channel, FONT)
        wanted: dict[tuple[str, str], str] = {}
        texts: list[str] = []
        links: list[str] = []
        for item in resp.get("output") or []:
            kind = item.get("type")
            if kind == "code_interpreter_call":
                result.code_calls += 1
            elif kind == "file_search_call":
                result.search_calls += 1
            elif kind == "message":
                for part in item.get("content") or []:
                    if part.get("type") != "output_text":
                        continue
                    text = str(part.get("text") or "")
                    spans: list[tuple[int, int, str]] = []
                    for ann in part.get("annotations") or []:
                        name = str(ann.get("filename") or "")
                        if ann.get("type") == "container_file_citation":
                            spans.append((int(ann.get("start_index") or 0),
                                          int(ann.get("end_index") or 0), name))
                            if ann.get("file_id") not in own:
                                wanted[(ann["container_id"], ann["file_id"])] = name
                        elif ann.get("type") == "file_citation" and name not in result.sources:
                            result.sources.append(name)
                    links += sandbox_paths(text)
                    texts.append(rewrite_links(text, spans))
        result.text = "\n\n".join(t for t in texts if t.strip())
        result.files = await self._download(req, wanted, links, own, font)
        return result

    async def _download(self, req: RunRequest, wanted: dict[tuple[str, str], str],
                        links: list[str], own: set[str | None], font: str | None
                        ) -> list[Produced]:
        """Fetch cited container files, and linked ones the model forgot to cite."""
        names = set(wanted.values())
        missing = [p for p in dict.fromkeys(links) if p.rsplit("/", 1)[-1] not in names
                   and p != font]
        if missing:
            cid = await self.store.conversation_id(req.channel, CONTAINER)
            if cid:
                try:
                    async for cf in self.client.containers.files.list(cid):
                        if cf.path in missing and cf.id not in own:
                            wanted[(cid, cf.id)] = cf.path.rsplit("/", 1)[-1]
                except openai.OpenAIError as e:
                    log.warning("assistant: cannot list container files: %s", _detail(e))
        out: list[Produced] = []
        for (cid, fid), name in wanted.items():
            try:
                content = await self.client.containers.files.content.retrieve(
                    fid, container_id=cid)
            except openai.OpenAIError as e:
                log.warning("assistant: cannot download %s: %s", name, _detail(e))
                continue
            out.append(Produced(name, content.content))
        return out

    async def cancel(self, active: Active) -> None:
        """Cancel the background response."""
        if active.run_id is not None:
            await self.client.responses.cancel(active.run_id)
