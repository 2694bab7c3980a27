"""A circuit breaker per backend, so that a backend that keeps failing stops costing every turn a try.

Only failures before the first token count: they are what failover pays for (a timeout or
a refused connection on every turn). A failure after the first token ends one turn and
says nothing the next try would avoid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed, then open after `failure_threshold` failures in a row, then half-open after `open_s`.

    - closed: every request may try; a success resets the count of failures.
    - open: `allow()` refuses until `open_s` have passed since the breaker opened.
    - half_open: `allow()` lets exactly one trial through and refuses the rest; the
      trial's success closes the breaker, its failure opens it for another `open_s`. A
      trial that ends without a verdict (its turn was cancelled) calls `abandon()`, so the
      next request becomes the trial.

    `on_change(state)` is called on every change of state, for metrics and logs. Call the
    methods from one thread (the event loop's).
    """

    def __init__(
        self,
        failure_threshold: int,
        open_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if open_s <= 0:
            raise ValueError(f"open_s must be more than 0, got {open_s}")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker whose `open_s` have passed reads as half-open."""
        if self._state == "open" and self._clock() - self._opened_at >= self.open_s:
            self._set("half_open")
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a request may try the backend now; in half-open, True makes it the trial."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_out:
            return False
        self._trial_out = True
        return True

    def record_success(self) -> None:
        """The backend answered (its first token came): close the breaker."""
        self._failures = 0
        self._trial_out = False
        self._set("closed")

    def record_failure(self) -> None:
        """The backend failed before its first token."""
        self._failures += 1
        self._trial_out = False
        tripped = self._state == "closed" and self._failures >= self.failure_threshold
        if tripped or self._state == "half_open":
            self._opened_at = self._clock()
            self._set("open")

    def abandon(self) -> None:
        """A request that `allow()` let through ended without success or failure."""
        self._trial_out = False

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
