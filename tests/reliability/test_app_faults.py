"""The interactive app when its store fails under it (on a real terminal)."""

from __future__ import annotations

import pytest

from mixchat.conversation import Message, Role
from mixchat.store import ConversationStore
from tests.e2e.helpers import mixchat_exe
from tests.reliability.helpers import Pty, cli

pytestmark = pytest.mark.e2e


def test_app_survives_its_conversation_being_deleted_elsewhere() -> None:
    with ConversationStore.open() as store:
        conv = store.create_conversation(
            model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "open me")
        )
    app = Pty([mixchat_exe(), "--resume", conv.id, "--model", "/nonexistent"])
    try:
        app.wait_for(lambda out: b"open me" in out, 60, "the app")
        assert cli("rm", conv.id).code == 0
        app.write(b"typed after the rm\r")
        # Either a notification or the crash report names the missing conversation.
        app.wait_for(
            lambda out: b"no conversation with id" in out or b"deleted elsewhere" in out,
            60,
            "the store error",
        )
        if app.proc.poll() is None:
            app.write(b"\x11")
        code = app.finish(timeout=60)
        output = app.output
    finally:
        app.close()
    assert b"Traceback" not in output
    assert code == 0
