"""The hours a report range reads from the hourly view: whole UTC hours, as usage counts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from svc_ledger.reports import hour_range, hours_of


def test_a_range_is_its_whole_hours_start_rounded_down_and_end_up() -> None:
    start = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)

    hours = hours_of(start, start + timedelta(hours=2))

    assert hours == ["2026-03-31T22", "2026-03-31T23", "2026-04-01T00"]
    assert (hours[0], "2026-04-01T01") == hour_range(start, start + timedelta(hours=2))


def test_a_range_on_hour_boundaries_has_no_extra_hour() -> None:
    start = datetime(2026, 12, 31, 23, tzinfo=UTC)

    assert hours_of(start, start + timedelta(hours=1)) == ["2026-12-31T23"]
    assert len(hours_of(start, start + timedelta(days=1))) == 24


def test_hours_are_utc_whatever_zone_the_range_is_given_in() -> None:
    berlin = timezone(timedelta(hours=1))
    start = datetime(2026, 1, 1, 0, 15, tzinfo=berlin)  # 2025-12-31 23:15 UTC

    assert hours_of(start, start + timedelta(minutes=30)) == ["2025-12-31T23"]
