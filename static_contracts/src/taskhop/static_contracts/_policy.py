"""Retry policy: how many attempts a job gets and how long to wait between them.

It lives with the contract because both sides read it: the producer documents intent, the
worker enforces it. Backoff is computed here, with the standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ._durations import parse_duration
from ._errors import ContractError
from ._record import Record, record

if TYPE_CHECKING:
    import random

__all__ = ["Backoff", "RetryPolicy", "RetrySpec"]

Backoff = Literal["fixed", "exponential"]


@record(frozen=True)
class RetryPolicy(Record):
    """Attempts and backoff for a task.

    Args:
        attempts: total runs allowed, the first included (``1`` means never retry).
        backoff: ``"exponential"`` doubles ``delay`` after each failure; ``"fixed"`` keeps it.
        delay: the first wait, in seconds.
        max_delay: the cap on any single wait, in seconds.
        jitter: spread waits over ``[d/2, d]`` ("equal jitter") so retries of many jobs
            that failed together do not arrive together.

    """

    # The fields, in the order __init__ takes them (not sorted: the order is the signature's).
    __slots__ = ("attempts", "backoff", "delay", "max_delay", "jitter")  # noqa: RUF023
    attempts: int
    backoff: Backoff
    delay: float
    max_delay: float
    jitter: bool

    def __init__(
        self,
        attempts: int = 3,
        backoff: Backoff = "exponential",
        delay: float = 1.0,
        max_delay: float = 300.0,
        jitter: bool = True,
    ) -> None:
        sets = object.__setattr__
        sets(self, "attempts", attempts)
        sets(self, "backoff", backoff)
        sets(self, "delay", delay)
        sets(self, "max_delay", max_delay)
        sets(self, "jitter", jitter)
        self.__post_init__()

    def __post_init__(self) -> None:
        # A method of its own, as a dataclass has: dataclass subclasses' __init__ call it.
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ContractError(f"retry.attempts: expected an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ContractError(f"retry.attempts: must be >= 1, got {self.attempts}")
        if self.backoff not in ("fixed", "exponential"):
            raise ContractError(
                f"retry.backoff: must be 'fixed' or 'exponential', got {self.backoff!r}"
            )
        for name in ("delay", "max_delay"):
            try:
                seconds = parse_duration(getattr(self, name), field=f"retry.{name}")
            except ValueError as exc:
                raise ContractError(str(exc)) from None
            object.__setattr__(self, name, seconds)

    @classmethod
    def of(cls, spec: RetrySpec) -> RetryPolicy:
        """Build a policy from what users write: a policy, an attempt count, a dict or None."""
        if spec is None:
            return cls()
        if isinstance(spec, RetryPolicy):
            return spec
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls(attempts=spec)
        if isinstance(spec, dict):
            unknown = set(spec) - {"attempts", "backoff", "delay", "max_delay", "jitter"}
            if unknown:
                raise ContractError(f"retry: unknown option(s) {sorted(unknown)}")
            return cls(**spec)
        raise ContractError(f"retry: expected RetryPolicy, int or dict, got {spec!r}")

    def delay_for(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed run number ``attempt`` (1-based) before the next."""
        base = self.delay if self.backoff == "fixed" else self.delay * 2 ** (attempt - 1)
        wait = min(base, self.max_delay)
        if self.jitter and wait > 0:
            import random  # ~1.2 ms: the first retry loads it, not every producer's import

            wait = wait / 2 + (rng or random).uniform(0, wait / 2)
        return wait

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data."""
        return {
            "attempts": self.attempts,
            "backoff": self.backoff,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }


RetrySpec = RetryPolicy | int | dict[str, Any] | None
"""What ``retry=`` accepts: a policy, a number of attempts, a dict of options, or None."""
