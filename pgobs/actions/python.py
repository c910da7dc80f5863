"""The python action: a user handler ``module:function``, sync or async, given the Event.

Async handlers run on the worker's event loop. Sync handlers run on the worker's
:class:`ThreadRunner`, so a blocking handler never stalls the other jobs. Any exception a handler
raises is its job's failure, ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit`` and a
``CancelledError`` of its own included: a handler cannot take the worker down.
``pgobs.PermanentError`` means: do not retry.
"""

from __future__ import annotations

import asyncio

from pgobs.actions.failures import ActionFailed
from pgobs.actions.specs import PythonSpec
from pgobs.actions.threads import ThreadRunner
from pgobs.errors import PermanentError
from pgobs.events import Event


async def call_handler(spec: PythonSpec, event: Event, threads: ThreadRunner, key: str) -> None:
    """``key`` names this run (``ActionCall.run_key``): a thread that outlives it is told apart
    from the next run's."""
    try:
        if spec.is_async:
            await spec.handler(event)
        else:
            await threads.run(spec.handler, event, spec.handler_name, key)
    except ActionFailed:
        raise
    except PermanentError as exc:
        raise ActionFailed(f"{spec.handler_name}: {exc}", "permanent") from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker stops the run (timeout, lost lease, shutdown)
        # The handler's own (a cancelled inner task let through): its failure, not a stop.
        raise ActionFailed(f"{spec.handler_name} raised CancelledError") from exc
    except (Exception, SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        raise ActionFailed(f"{spec.handler_name} raised {type(exc).__name__}: {exc}") from exc
