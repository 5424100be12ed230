"""Key bindings run in the order the keys were typed.

Textual inserts a printable key in the focused text widget's own key handler, but runs a
non-priority binding (Backspace, Delete, the arrows, Ctrl+W, Tab...) only once the key
event has bubbled up, message queue by message queue, to the app. A burst of keys is
queued before any of that happens, so the letters typed after a Backspace were inserted
before it ran: ``capi`` + 4 Backspace + ``blackb`` gave ``capibl``. Text widgets here run
the binding from their own key handler instead, before the next key is read.
"""

from __future__ import annotations

from textual import events
from textual.widget import Widget


async def run_binding_now(widget: Widget, event: events.Key) -> bool:
    """Run the binding ``event.key`` has in the focus chain now; True if one ran.

    Priority bindings have already run before the key reached the widget, and printable
    keys are the widget's own to insert, so both are left alone.
    """
    if event.is_printable:
        return False
    active = widget.screen.active_bindings.get(event.key)
    if active is None or active.binding.priority or not active.enabled:
        return False
    event.stop()
    event.prevent_default()
    await widget.app.run_action(active.binding.action, active.node)
    return True
