"""The python action: a user handler ``module:function``, sync or async, given the Event.

Async handlers run on the worker's event loop. Sync handlers run in a worker thread, so a
blocking handler never stalls the other jobs; past its timeout it is abandoned (reported as a
timeout) though its thread runs on. ``pgobs.PermanentError`` means: do not retry.
"""

from __future__ import annotations

import anyio

from pgobs.actions.specs import PythonSpec
from pgobs.errors import PermanentError
from pgobs.events import Event
from pgobs.queue.outcome import ActionFailed


async def call_handler(spec: PythonSpec, event: Event) -> None:
    try:
        if spec.is_async:
            await spec.handler(event)
        else:
            # On a timeout the runner moves on; the thread itself cannot be stopped and finishes
            # in the background (its result is ignored).
            await anyio.to_thread.run_sync(spec.handler, event, abandon_on_cancel=True)
    except ActionFailed:
        raise
    except PermanentError as exc:
        raise ActionFailed(f"{spec.handler_name}: {exc}", "permanent") from exc
    except Exception as exc:
        raise ActionFailed(f"{spec.handler_name} raised {type(exc).__name__}: {exc}") from exc
