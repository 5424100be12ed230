"""A turn: one question (or a regenerate, an edit, a continue) and its reply, the same for
``mixchat ask`` and the app.

``Turn`` owns the decisions both front ends used to make apart: the settings in effect for
the conversation, the check that the prompt fits before any weight loads, committing the
question, recording the reply while it streams, classifying how it ended (``Ending``,
``FailureKind``) and taking back a question that never reached the model. The front ends
only show what happens.

Order of use: ``Turn(...)``; ``check_fits`` (optional); one of ``ask``, ``again``,
``continue_reply``; ``start`` (creates the reply's row: call it where the store may be
used); ``run`` (streams; may run on a worker thread); ``undo`` after a failure that left
nothing asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mixchat.config import Settings, SettingsSources, conversation_settings
from mixchat.conversation import Conversation, Message, Role, Status
from mixchat.engine.base import (
    Engine,
    Event,
    Failed,
    FailureKind,
    Finished,
    GenerationParams,
    TextDelta,
    Usage,
)
from mixchat.prompt import PromptError, prompt_messages
from mixchat.recorder import Ending, ReplyNotSaved, ReplyRecorder, TurnOutcome
from mixchat.store import ConversationStore, StoreError

__all__ = ["Ending", "FailureKind", "ReplyNotSaved", "Turn", "TurnOutcome", "stream_reply"]


class Turn:
    """One exchange with the model in one conversation (``None``: a new one)."""

    def __init__(
        self,
        store: ConversationStore | None,
        sources: SettingsSources,
        conversation: Conversation | None,
        new_settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``store`` None keeps nothing (``ask --no-save``); ``new_settings`` are values chosen
        for a new conversation (the app's settings window) on top of ``sources``."""
        self.store = store
        self.conversation = conversation
        self.preset = sources.preset  # a new conversation records the preset it began with
        settings = sources.effective(conversation)
        if conversation is None and new_settings:
            settings = replace(settings, **new_settings)
        self.settings: Settings = settings
        self.params = GenerationParams.from_settings(settings)
        self.system_prompt: str | None = settings.system_prompt
        self.created = False  # ask() made the conversation
        self.question: Message | None = None  # what ask() committed
        self._continuing: Message | None = None
        self._extra: list[Message] = []  # the question when nothing is saved
        self.recorder: ReplyRecorder | None = None

    # -- before anything is saved -------------------------------------------

    def prompt_history(self, question: Message | None = None) -> list[Message]:
        """The messages the prompt is built from, ``question`` added at the end."""
        messages = list(self.conversation.messages) if self.conversation is not None else []
        return prompt_messages([*messages, *self._extra, *([question] if question else [])])

    def check_fits(self, engine: Engine, question: Message | None = None) -> None:
        """Raise ``PromptError`` if the prompt cannot fit the model's context, when the
        engine can tell without loading its weights (``check_fits`` is optional)."""
        check = getattr(engine, "check_fits", None)
        if check is not None:
            check(self.prompt_history(question), self.system_prompt, self.params.max_new_tokens)

    # -- committing the question -------------------------------------------

    def ask(
        self, question: Message, *, replacing: int | None = None, title: str | None = None
    ) -> None:
        """Commit ``question``: a new conversation's first message (one transaction), the next
        message, or (``replacing`` a message id) in place of that message and all after it.
        ``title`` names a new conversation (default: from the question)."""
        self.question = question
        if self.store is None:
            self._extra = [question]
            return
        if self.conversation is None:
            self.conversation = self.store.create_conversation(
                model=self.settings.model,
                system_prompt=self.system_prompt,
                settings=conversation_settings(self.settings, self.preset),
                title=title,
                first_message=question,
            )
            self.created = True
        elif replacing is not None:
            self.store.replace_from(replacing, question)
        else:
            self.store.append_message(self.conversation.id, question)
        self._reload()

    def again(self, user_message: Message) -> None:
        """Answer ``user_message`` again: everything after it is dropped (regenerate)."""
        conv = self._open()
        index = next(i for i, m in enumerate(conv.messages) if m.id == user_message.id)
        later = conv.messages[index + 1 :]
        if self.store is not None and later and later[0].id is not None:
            self.store.truncate_from(later[0].id)
            self._reload()

    def continue_reply(self, reply: Message) -> None:
        """Go on with ``reply`` (the conversation's last message, an assistant one) where it
        ended: the continuation is added to it and saved as the same message."""
        conv = self._open()
        if (
            not conv.messages
            or conv.messages[-1].id != reply.id
            or reply.role is not Role.ASSISTANT
        ):
            raise PromptError("only the last answer of a conversation can be continued")
        if not reply.content:
            raise PromptError("an empty answer cannot be continued: regenerate it instead")
        self._continuing = reply

    def undo(self) -> None:
        """Take back the question ``ask`` committed (it never reached the model): a new
        conversation is deleted, an appended question and anything after it removed."""
        if self.store is None or self.conversation is None or self.question is None:
            return
        if self.created:
            self.store.delete(self.conversation.id)
            self.conversation = None
        elif self.question.id is not None:
            self.store.truncate_from(self.question.id)
        self.question = None

    # -- the reply -----------------------------------------------------------

    def start(self) -> ReplyRecorder:
        """Open the reply's row (or reopen the reply being continued) and return its
        recorder; the prompt's messages are fixed now."""
        conv_id = self.conversation.id if self.conversation is not None else None
        store = self.store if conv_id is not None else None
        self.recorder = ReplyRecorder(store, conv_id, continuing=self._continuing)
        return self.recorder

    def run(
        self,
        engine: Engine,
        cancel: threading.Event,
        on_event: Callable[[Event], None],
    ) -> TurnOutcome:
        """Stream the reply into the store (``start`` first); see ``stream_reply``."""
        recorder = self.recorder or self.start()
        history = self.prompt_history()
        return stream_reply(
            engine, recorder, history, self.system_prompt, self.params, cancel, on_event
        )

    def _open(self) -> Conversation:
        if self.conversation is None:
            raise PromptError("no conversation is open")
        return self.conversation

    def _reload(self) -> None:
        if self.store is not None and self.conversation is not None:
            self.conversation = self.store.get_conversation(self.conversation.id)


def _classify(outcome: TurnOutcome) -> Status:
    """Set ``outcome.ending`` (and ``failure``) from its events; the status to save."""
    failed = next((e for e in outcome.events if isinstance(e, Failed)), None)
    if failed is not None:
        outcome.ending, outcome.failure = Ending.FAILED, FailureKind(failed.kind)
        outcome.unsent = failed.unsent
        return Status.ERROR
    if outcome.finish_reason == "stop":
        outcome.ending = Ending.COMPLETE
    elif outcome.finish_reason == "length":
        outcome.ending = Ending.LENGTH
    elif outcome.finish_reason == "cancelled":
        outcome.ending = Ending.STOPPED
        return Status.INTERRUPTED
    else:  # the stream ended without saying how: treat it as cut short
        outcome.ending = Ending.INTERRUPTED
        return Status.INTERRUPTED
    return Status.COMPLETE


def stream_reply(
    engine: Engine,
    recorder: ReplyRecorder,
    history: Sequence[Message],
    system_prompt: str | None,
    params: GenerationParams,
    cancel: threading.Event,
    on_event: Callable[[Event], None],
) -> TurnOutcome:
    """Run one reply, recording it; ``on_event`` sees every event (for display).

    A ``KeyboardInterrupt`` (or any exception) cancels generation, saves the partial reply
    as interrupted (``Ending.INTERRUPTED``) and propagates; if that save fails too,
    ``outcome.not_saved`` says so. A store that fails for good (disk full) stops the reply
    with the store's error; ``ReplyNotSaved`` at the end means the reply streamed in full
    but was not all saved.
    """
    outcome = recorder.outcome
    try:
        for event in engine.stream(history, system_prompt, params, cancel):
            outcome.events.append(event)
            if isinstance(event, TextDelta):
                recorder.add(event.text)
            elif isinstance(event, Usage):
                outcome.usage = event
            elif isinstance(event, Finished):
                outcome.finish_reason = event.reason
            elif isinstance(event, Failed):
                outcome.error = event.message
            on_event(event)
            recorder.raise_if_broken()
    except BaseException:
        cancel.set()
        outcome.ending = Ending.INTERRUPTED
        try:
            recorder.finish(Status.INTERRUPTED)
        except StoreError as exc:
            outcome.not_saved = str(exc)
        raise
    return recorder.finish(_classify(outcome))
