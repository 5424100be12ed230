"""Opening a conversation in the app makes it the one `mixchat -c` and `ask -c` continue
(the store's last used), whatever times an imported conversation carries."""

from __future__ import annotations

import time

from mixchat.conversation import Conversation, Message, Role
from mixchat.store import ConversationStore
from mixchat.tui.widgets.sidebar import Sidebar
from tests.tui.conftest import AppFactory
from tests.tui.helpers import ready
from tests.tui.test_app import SIZE


async def test_opening_a_conversation_makes_it_the_last_used(
    make_app: AppFactory, store: ConversationStore
) -> None:
    future = time.time() + 3600 * 24 * 365
    stranger = store.import_conversation(
        Conversation("", "stranger", future, future, messages=[Message(Role.USER, "theirs")])
    )
    mine = store.create_conversation(
        model="m", system_prompt=None, settings={}, first_message=Message(Role.USER, "mine")
    )
    assert store.last_conversation_id() == mine.id
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        screen.sidebar.post_message(Sidebar.Opened(stranger.id))
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.conversation is not None and screen.conversation.id == stranger.id
    assert store.last_conversation_id() == stranger.id
