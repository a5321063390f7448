"""Handler deadlines: the timer signal in the main thread, a thread everywhere else."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from taskhop.sdk import HandlerTimeout
from taskhop.sdk._timeouts import call_with_timeout


def sleeper(seconds: float, finished: list[bool]) -> str:
    time.sleep(seconds)
    finished.append(True)
    return "done"


def test_in_the_main_thread_the_timer_stops_the_handler_itself() -> None:
    """No thread is left running: the handler is interrupted where it waits."""
    finished: list[bool] = []
    before = threading.active_count()
    started = time.monotonic()
    with pytest.raises(HandlerTimeout, match=r"0\.05s timeout"):
        call_with_timeout(sleeper, (5, finished), 0.05)
    assert time.monotonic() - started < 1
    assert finished == []
    assert threading.active_count() == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_handler_in_time_returns_its_value_and_disarms_the_timer() -> None:
    """Disarmed, a late SIGALRM (a timer firing as the handler returned) does nothing."""
    assert call_with_timeout(sleeper, (0, []), 5) == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    os.kill(os.getpid(), signal.SIGALRM)
    time.sleep(0.01)  # the handler runs between bytecodes: it must not raise


def test_errors_from_the_handler_propagate_unchanged() -> None:
    def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        call_with_timeout(boom, (), 5)


def test_off_the_main_thread_the_handler_runs_in_a_thread() -> None:
    """Signals reach only the main thread: elsewhere the deadline is a thread join."""
    answers: list[Any] = []

    def host() -> None:
        try:
            call_with_timeout(sleeper, (1, []), 0.05)
        except HandlerTimeout as exc:
            answers.append(exc)
        answers.append(call_with_timeout(sleeper, (0, []), 5))

    thread = threading.Thread(target=host)
    thread.start()
    thread.join(10)
    assert isinstance(answers[0], HandlerTimeout)
    assert answers[1] == "done"


def test_a_host_that_owns_sigalrm_keeps_it() -> None:
    """Someone else's SIGALRM handler is never replaced: the thread is used instead."""
    fired: list[int] = []

    def theirs(signum: int, frame: object) -> None:
        fired.append(signum)

    signal.signal(signal.SIGALRM, theirs)
    try:
        with pytest.raises(HandlerTimeout):
            call_with_timeout(sleeper, (1, []), 0.05)
        assert signal.getsignal(signal.SIGALRM) is theirs
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert fired == []
