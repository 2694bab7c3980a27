"""svc_router's circuit breaker: closed, open after N failures, half-open after open_s, one trial."""

from __future__ import annotations

import pytest

from svc_router.backends import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[BreakerState]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[BreakerState]) -> CircuitBreaker:
    return CircuitBreaker(3, 10.0, clock=clock, on_change=changes.append)


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state as a call, so that one assertion about it does not narrow the next."""
    return breaker.state


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()


def test_a_new_breaker_is_closed_and_allows_every_request(breaker: CircuitBreaker) -> None:
    assert state(breaker) == "closed"
    assert all(breaker.allow() for _ in range(10))


def test_it_opens_after_the_threshold_of_failures_in_a_row(
    breaker: CircuitBreaker, changes: list[BreakerState]
) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed"
    assert breaker.allow()

    breaker.record_failure()

    assert state(breaker) == "open"
    assert not breaker.allow()
    assert changes == ["open"]


def test_a_success_resets_the_count_of_failures(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert state(breaker) == "closed"
    assert breaker.consecutive_failures == 2


def test_an_open_breaker_refuses_until_open_s_have_passed(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.now += 9.99

    assert state(breaker) == "open"
    assert not breaker.allow()

    clock.now += 0.01
    assert state(breaker) == "half_open"


def test_half_open_lets_exactly_one_trial_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.now += 10

    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()
    assert state(breaker) == "half_open"


def test_a_successful_trial_closes_the_breaker(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[BreakerState]
) -> None:
    _open(breaker)
    clock.now += 10
    assert breaker.allow()

    breaker.record_success()

    assert state(breaker) == "closed"
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(5))
    assert changes == ["open", "half_open", "closed"]


def test_a_failed_trial_opens_the_breaker_for_another_open_s(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[BreakerState]
) -> None:
    _open(breaker)
    clock.now += 15
    assert breaker.allow()

    breaker.record_failure()  # one failure is enough in half-open

    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 9.99
    assert not breaker.allow()
    clock.now += 0.01
    assert breaker.allow()
    assert changes == ["open", "half_open", "open", "half_open"]


def test_an_abandoned_trial_lets_the_next_request_be_the_trial(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    _open(breaker)
    clock.now += 10
    assert breaker.allow()
    assert not breaker.allow()

    breaker.abandon()

    assert state(breaker) == "half_open"
    assert breaker.allow()
    assert not breaker.allow()


def test_after_closing_again_it_takes_the_whole_threshold_to_open(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    _open(breaker)
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()

    breaker.record_failure()
    breaker.record_failure()

    assert state(breaker) == "closed"
    breaker.record_failure()
    assert state(breaker) == "open"


def test_a_threshold_of_one_opens_on_the_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 1.0, clock=clock)

    breaker.record_failure()

    assert state(breaker) == "open"


@pytest.mark.parametrize(("threshold", "open_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_it_refuses_settings_that_could_never_close_or_open(threshold: int, open_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(threshold, open_s)
