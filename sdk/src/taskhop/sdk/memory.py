"""The embedded default: an in-process queue, job store and worker thread.

A real backend, not a mock (dramatiq's StubBroker, httpx's MockTransport): messages are
encoded to wire bytes and decoded again, delays and retries wait on real time, jobs that
exhaust their retries and poison messages land in ``dead_letters``. It is what
``create_app()`` uses with no arguments and what ``taskhop.sdk.testing`` swaps in for tests.

Not for production across processes: everything lives in this process's memory.
"""

from ._memory_queue import DeadLetter, MemoryQueue
from ._memory_store import MemoryPayloads, MemoryStore

__all__ = ["DeadLetter", "MemoryPayloads", "MemoryQueue", "MemoryStore"]
