"""Run a sync handler under a deadline: a timer signal where possible, a thread otherwise.

On Lambda every job has a deadline (the invocation's remaining time), so this runs once per
job and its cost matters. Starting a thread per job costs ~100 µs or more; arming
``ITIMER_REAL`` costs about a microsecond. So in the main thread, when nothing else uses
``SIGALRM``, the handler runs inline and the timer raises ``HandlerTimeout`` inside it at the
deadline, the way Celery's soft time limit and pytest-timeout's signal method work: blocking
calls (sleep, socket reads, lock waits) are interrupted, and the handler really stops instead
of running on beside the retry. A long computation inside a C extension is interrupted only
when it returns to Python.

The handler stays installed once taskhop has put it there (it does nothing unless a job is
running), so each job costs two ``setitimer`` calls, not a ``signal.signal`` pair.

Elsewhere (worker threads, an event loop's executor, a host that owns ``SIGALRM``) the
handler runs in a fresh daemon thread. At the deadline the same stop is raised inside that
thread (``PyThreadState_SetAsyncExc``, the only way CPython offers to interrupt a thread) and
the thread gets ``_GRACE`` seconds to unwind; one blocked inside a C call is then abandoned,
and ends on its own.

The stop raised inside the handler is ``_DeadlinePassed``, a ``BaseException`` like
``asyncio.CancelledError``: a handler's ``except Exception`` cannot swallow it and run on
beside the job's next attempt. The timer keeps firing every ``_GRACE`` seconds until the
handler gives up (even a bare ``except:`` only delays it). The caller sees ``HandlerTimeout``.
"""

from __future__ import annotations

import contextvars
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._errors import HandlerTimeout

__all__ = ["call_with_timeout"]

_HAS_TIMER = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
_raw_getsignal: Callable[[int], object] = getattr(
    sys.modules.get("_signal"), "getsignal", signal.getsignal
)
"""CPython's C ``getsignal``: ``signal.getsignal`` wraps the answer in an enum, which costs
~4 µs when the handler is a function (``Handlers(fn)`` raises and is caught), once a job."""
_GRACE = 1.0
"""Seconds between repeated stops, and how long a stopped thread gets to unwind."""
_armed: list[float | None] = [None]
"""The timeout the timer is armed for (main thread only), or None when it is not armed."""


def call_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """``fn(*args)``, or ``HandlerTimeout`` once ``timeout`` seconds have passed."""
    if _timer_is_ours():
        return _with_timer(fn, args, timeout)
    return _with_thread(fn, args, timeout)


class _DeadlinePassed(BaseException):
    """Raised inside a handler at its deadline; not an ``Exception``, so it is not swallowed."""


def _timed_out(timeout: float) -> HandlerTimeout:
    return HandlerTimeout(f"handler ran past its {timeout:g}s timeout")


def _on_alarm(signum: int, frame: object) -> None:
    if _armed[0] is not None:  # not armed: a timer that fired as the handler returned
        raise _DeadlinePassed


def _timer_is_ours() -> bool:
    """Whether the timer may be used: installed once, then kept (a job per call is hot)."""
    if not _HAS_TIMER or threading.get_ident() != threading.main_thread().ident:
        return False
    current = _raw_getsignal(signal.SIGALRM)
    if current is _on_alarm:
        return True
    if current in (signal.SIG_DFL, None) and signal.getitimer(signal.ITIMER_REAL)[0] == 0:
        signal.signal(signal.SIGALRM, _on_alarm)
        return True
    return False  # someone else's handler or timer: leave them alone


def _with_timer(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    _armed[0] = timeout
    signal.setitimer(signal.ITIMER_REAL, max(timeout, 1e-6), _GRACE)  # then every _GRACE s
    try:
        return fn(*args)
    except _DeadlinePassed:
        raise _timed_out(timeout) from None
    finally:
        _armed[0] = None
        signal.setitimer(signal.ITIMER_REAL, 0)


def _with_thread(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            box["value"] = context.run(fn, *args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="taskhop-handler", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _interrupt(thread)
        thread.join(_GRACE)
        raise _timed_out(timeout)
    error = box.get("error")
    if isinstance(error, _DeadlinePassed):  # it arrived as the handler was returning
        raise _timed_out(timeout)
    if error is not None:
        raise error
    return box.get("value")


def _interrupt(thread: threading.Thread) -> None:
    """Raise ``_DeadlinePassed`` inside ``thread`` at its next Python instruction."""
    import ctypes  # lazily: only a handler past its deadline pays for it

    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(_DeadlinePassed)
        )
