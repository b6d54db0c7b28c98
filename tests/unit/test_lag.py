"""Event-time lag: grows while work waits, freezes once a read leaves none."""

from __future__ import annotations

from service.lag import EventLag
from tests.support.clock import ManualClock

NOW = 1_800_000_000_000


def test_behind_the_lag_grows_with_the_clock_until_it_catches_up() -> None:
    clock = ManualClock(NOW)
    lag = EventLag(clock)
    lag.read("t:0", clock.ms - 3_600_000, behind=True)
    assert lag.seconds() == {"t:0": 3_600.0}
    clock.ms += 60_000  # reading nothing for a minute, with work waiting
    assert lag.seconds() == {"t:0": 3_660.0}
    lag.read("t:0", clock.ms - 1_200_000, behind=True)  # newer events: less behind
    assert lag.seconds() == {"t:0": 1_200.0}
    lag.read("t:0", clock.ms - 2_000, behind=False)  # the end of the log
    clock.ms += 8 * 3_600_000  # a quiet night is not lag
    assert lag.seconds() == {"t:0": 2.0}


def test_an_older_read_does_not_move_the_newest_time_back() -> None:
    clock = ManualClock(NOW)
    lag = EventLag(clock)
    lag.read("q", clock.ms - 5_000, behind=False)
    lag.read("q", clock.ms - 900_000, behind=False)  # a late straggler
    assert lag.seconds() == {"q": 5.0}


def test_caught_up_without_new_events_freezes_the_lag_at_that_read() -> None:
    clock = ManualClock(NOW)
    lag = EventLag(clock)
    lag.read("q", clock.ms - 30_000, behind=True)
    clock.ms += 10_000
    lag.read("q", None, behind=False)  # an empty receive: nothing waits
    clock.ms += 600_000
    assert lag.seconds() == {"q": 40.0}


def test_positions_with_no_events_yet_are_not_reported_and_revoked_ones_go() -> None:
    clock = ManualClock(NOW)
    lag = EventLag(clock)
    lag.read("t:0", None, behind=True)
    assert lag.seconds() == {}
    lag.read("t:1", clock.ms + 5_000, behind=False)  # ahead of the clock: no negative lag
    assert lag.seconds() == {"t:1": 0.0}
    lag.forget("t:1")
    assert lag.seconds() == {}


def test_a_quiet_push_source_is_forgotten_instead_of_behind_for_ever() -> None:
    clock = ManualClock(NOW)
    lag = EventLag(clock, forget_after_s=120)
    lag.read("http", clock.ms - 3_600_000, behind=False)  # one old event posted by hand
    assert lag.seconds() == {"http": 3_600.0}
    clock.ms += 60_000
    lag.read("http", clock.ms - 7_200_000, behind=False)  # older still: still reading
    clock.ms += 100_000
    assert lag.seconds() == {"http": 3_600.0}  # read 100 s ago: kept
    clock.ms += 30_000
    assert lag.seconds() == {}  # nothing for over two minutes
