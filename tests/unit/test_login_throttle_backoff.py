"""The back-off of a throttled name doubles per lock up to the cap, whatever the settings
allow (`TESSERA_LOGIN_THROTTLE_BASE_SECONDS` has no upper bound): a name locked many times
over must still get an answer, not an overflow (a 500 on every login for that name)."""

from datetime import timedelta

from tessera.domains.identity.throttle import ThrottlePolicy, backoff

DAY = timedelta(days=1)


def test_back_off_doubles_up_to_the_cap() -> None:
    policy = ThrottlePolicy(5, DAY, timedelta(seconds=60), timedelta(seconds=900))
    waits = [backoff(policy, n).total_seconds() for n in range(6)]
    assert waits == [60, 120, 240, 480, 900, 900]


def test_a_long_base_locked_many_times_stays_at_the_cap() -> None:
    policy = ThrottlePolicy(5, DAY, DAY, DAY)
    assert backoff(policy, 1_000) == DAY
