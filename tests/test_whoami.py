"""/whoami prints ids in exactly the form [access] takes: pasting them in grants access."""

from __future__ import annotations

import re

from tests.harness import ALICE, BOB, Driver


def toml_line(text: str, key: str) -> str:
    m = re.search(rf'^{key} = \["([^"]+)"\]$', text, re.M)
    assert m, f"no {key} line in {text!r}"
    return m.group(0)


async def test_whoami_ids_work_in_access_lists(chat: Driver) -> None:
    group = chat.supports_groups
    text = await chat.ask("/whoami", group=group, mention=group)
    users = toml_line(text, "allowed_users")
    chats = toml_line(text, "allowed_chats")
    assert "you are not an admin" in text
    # only Alice, only this chat: Alice is answered there, Bob is refused
    chat.config_text = f"[access]\n{users}\n{chats}\nadmins = []\n"
    await chat.restart()
    assert (await chat.ask("hi", group=group, mention=group)).endswith("hi")
    refused = await chat.ask("me too", user=BOB, group=group, mention=group)
    assert "not allowed" in refused
    # the admins line makes Alice an admin
    chat.config_text = f"[access]\n{toml_line(text, 'admins')}\n"
    await chat.restart()
    assert "you are an admin" in await chat.ask("/whoami", user=ALICE, group=group,
                                                   mention=group)
