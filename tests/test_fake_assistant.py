"""The fake Files / Containers / Vector stores / Conversations / Responses / Assistants API
is as strict as the real one: driven here with the real openai client."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.openai_assistant import Turn
from tests.harness import wait_for

MODEL = "gpt-5.4-mini"


@pytest.fixture
async def client(openai_fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(api_key=openai_fake.api_key, base_url=openai_fake.url, max_retries=0)
    yield c
    await c.close()


async def test_files_reject_bad_purposes_empty_files_and_unknown_ids(
        client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.files.create(file=("a.csv", b"a,b\n", "text/csv"),
                                  purpose="code")  # type: ignore[arg-type]
    assert bad.value.code == "invalid_value" and bad.value.param == "purpose"
    with pytest.raises(openai.BadRequestError, match="File is empty"):
        await client.files.create(file=("a.csv", b"", "text/csv"), purpose="assistants")
    with pytest.raises(openai.NotFoundError, match="No such File object: file-nope"):
        await client.files.retrieve("file-nope")
    f = await client.files.create(file=("a.csv", b"a,b\n", "text/csv"), purpose="assistants")
    assert (f.filename, f.bytes, f.purpose, f.object) == ("a.csv", 4, "assistants", "file")
    with pytest.raises(openai.BadRequestError, match="Not allowed to download"):
        await client.files.content(f.id)
    deleted = await client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id


async def test_containers_hold_files_and_expire(client: AsyncOpenAI,
                                                openai_fake: FakeOpenAI) -> None:
    f = await client.files.create(file=("d.csv", b"x\n1\n", "text/csv"), purpose="assistants")
    c = await client.containers.create(name="t", file_ids=[f.id],
                                       expires_after={"anchor": "last_active_at",
                                                      "minutes": 20})
    files = [cf async for cf in client.containers.files.list(c.id)]
    assert [(cf.path, cf.source) for cf in files] == [("/mnt/data/d.csv", "user")]
    content = await client.containers.files.content.retrieve(files[0].id, container_id=c.id)
    assert content.content == b"x\n1\n"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.containers.create(name="t", expires_after={"anchor": "created_at",
                                                                "minutes": 5})  # type: ignore[typeddict-item]
    assert bad.value.param == "expires_after.anchor"
    openai_fake.assistant.expire_containers(c.id)
    assert (await client.containers.retrieve(c.id)).status == "expired"
    with pytest.raises(openai.BadRequestError, match="Container is expired"):
        await client.responses.create(model=MODEL, input="hi", tools=[
            {"type": "code_interpreter", "container": c.id}])
    with pytest.raises(openai.NotFoundError):
        await client.containers.retrieve("cntr_nope")


async def test_vector_store_processing_reports_failures(client: AsyncOpenAI,
                                                        openai_fake: FakeOpenAI) -> None:
    vs = await client.vector_stores.create(name="t")
    good = await client.files.create(file=("n.md", b"# hi\n", "text/markdown"),
                                     purpose="assistants")
    csv = await client.files.create(file=("n.csv", b"a\n", "text/csv"), purpose="assistants")
    ok = await client.vector_stores.files.create_and_poll(file_id=good.id,
                                                          vector_store_id=vs.id)
    assert ok.status == "completed" and ok.last_error is None
    failed = await client.vector_stores.files.create_and_poll(file_id=csv.id,
                                                              vector_store_id=vs.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "unsupported_file"
    with pytest.raises(openai.NotFoundError, match="No vector store found"):
        await client.vector_stores.retrieve("vs_nope")


async def test_responses_are_strict(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model=MODEL, input="hi",
                                      extra_body={"temprature": 1})
    assert bad.value.code == "unknown_parameter" and bad.value.param == "temprature"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model=MODEL, input="hi", tools=[
            {"type": "code_interpreter",
             "container": {"type": "auto", "files": ["file-x"]}}])  # type: ignore[typeddict-unknown-key]
    assert bad.value.param == "tools[0].container.files"
    with pytest.raises(openai.NotFoundError, match="Conversation with id"):
        await client.responses.create(model=MODEL, input="hi", conversation="conv_nope")
    with pytest.raises(openai.BadRequestError):
        await client.conversations.create(items=[{"role": "user", "content": "x"}] * 21)


async def test_background_response_streams_and_cancels(client: AsyncOpenAI,
                                                      openai_fake: FakeOpenAI) -> None:
    api = openai_fake.assistant
    conv = await client.conversations.create()
    c = await client.containers.create(name="t")
    api.script(Turn(code="print(1)", files={"out.png": b"\x89PNG"},
                    text="See [out](sandbox:/mnt/data/out.png)"))
    stream = await client.responses.create(
        model=MODEL, input="go", conversation=conv.id, background=True, stream=True,
        tools=[{"type": "code_interpreter", "container": c.id}])
    kinds = []
    final = None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.completed":
            final = event.response
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert "response.code_interpreter_call.interpreting" in kinds
    assert final is not None and final.status == "completed"
    (ann,) = [a for o in final.output if o.type == "message" for p in o.content
              for a in p.annotations]  # type: ignore[union-attr]
    assert ann.type == "container_file_citation" and ann.filename == "out.png"
    items = [i async for i in client.conversations.items.list(conv.id, order="asc")]
    assert [i.type for i in items] == ["message", "code_interpreter_call", "message"]
    api.script(Turn(hang=True))
    r = await client.responses.create(model=MODEL, input="wait", background=True)
    assert r.status == "queued"
    await wait_for(lambda: api.responses[r.id].obj["status"] == "in_progress")
    assert (await client.responses.cancel(r.id)).status == "cancelled"
    api.script(Turn(text="now"))
    done = await client.responses.create(model=MODEL, input="now")
    with pytest.raises(openai.BadRequestError, match="background"):
        await client.responses.cancel(done.id)


async def test_assistants_need_the_beta_header_and_walk_every_status(
        client: AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="OpenAI-Beta"):
        await client.post("/assistants", body={"model": MODEL}, cast_to=object)
    api = openai_fake.assistant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        beta = client.beta
        a = await beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
        t = await beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        api.script(Turn(tool_call=("lookup", "{}"), text="done"))
        stream = await beta.threads.runs.create(t.id, assistant_id=a.id, stream=True)
        seen = []
        run = None
        async for event in stream:
            seen.append(event.event)
            run = event.data
        assert seen[-1] == "thread.run.requires_action"
        assert run is not None and run.required_action is not None
        call = run.required_action.submit_tool_outputs.tool_calls[0]
        with pytest.raises(openai.BadRequestError, match="Expected tool outputs"):
            await beta.threads.runs.submit_tool_outputs(run.id, thread_id=t.id,
                                                        tool_outputs=[])
        stream = await beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=t.id, tool_outputs=[{"tool_call_id": call.id, "output": "no"}],
            stream=True)
        async for event in stream:
            seen.append(event.event)
        assert seen[-1] == "thread.run.completed"
        api.script(Turn(hang=True))
        r = await beta.threads.runs.create(t.id, assistant_id=a.id)
        assert (await beta.threads.runs.cancel(r.id, thread_id=t.id)).status == "cancelling"
        await wait_for(lambda: api.legacy.runs[r.id].obj["status"] == "cancelled")
        steps = [s async for s in beta.threads.runs.steps.list(run.id, thread_id=t.id)]
        assert {s.type for s in steps} == {"tool_calls", "message_creation"}
        with pytest.raises(openai.NotFoundError, match="No thread found"):
            await beta.threads.retrieve("thread_nope")
