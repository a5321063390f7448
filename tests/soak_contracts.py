"""The soak's two tasks, as static contracts the producer shares with the worker.

``work`` carries its own fault plan (fail retryably until an attempt, fail permanently, or
trip the worker kill); ``charge`` is the idempotent task whose side effect is counted.
"""

from __future__ import annotations

from typing import TypedDict

from taskhop.static_contracts import static_contract


class Work(TypedDict):
    n: int
    fail_until: int  # raise a retryable error on attempts below this one (0: never)
    permanent: bool  # raise PermanentError on every attempt
    trip: bool  # on attempt 1, signal the soak driver and hang until it SIGKILLs the worker


class Charge(TypedDict):
    account: str
    cents: int


class Charged(TypedDict):
    account: str
    cents: int


work = static_contract(
    "soak-work",
    input=Work,
    output=int,
    retry={"attempts": 3, "delay": 0.2, "jitter": False},
    timeout="5s",
)
charge = static_contract(
    "soak-charge",
    input=Charge,
    output=Charged,
    retry={"attempts": 3, "delay": 0.2, "jitter": False},
    timeout="5s",
)
