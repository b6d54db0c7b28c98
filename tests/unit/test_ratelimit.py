from service.ratelimit import RateLimiter


def test_a_client_gets_its_burst_then_its_rate() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == 0.5  # one token every half second
    assert limiter.take("b", 0.0) == 0.0  # others are not affected
    assert limiter.take("a", 0.5) == 0.0
    assert limiter.take("a", 0.5) > 0 and limiter.limited == 2


def test_the_client_table_is_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_clients=100)
    for n in range(10_000):
        limiter.take(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limiter._buckets) == 100
