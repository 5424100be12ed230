"""Which engine serves a set of settings: a server at ``endpoint``, else the local model.

Both engines are imported here, on first use, so that nothing heavy is imported before a
front end needs a model.
"""

from __future__ import annotations

from mixchat.config import Settings
from mixchat.engine.base import Engine


def make_engine(settings: Settings) -> Engine:
    """The remote engine when an endpoint is set, else the local transformers engine."""
    if settings.endpoint:
        from mixchat.engine.remote import RemoteEngine

        return RemoteEngine(settings, settings.endpoint, api_key_env=settings.api_key_env)
    from mixchat.engine.transformers import TransformersEngine

    return TransformersEngine(settings)
