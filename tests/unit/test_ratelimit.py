from service.ratelimit import RateLimiter, body_cost


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


def test_a_request_costs_one_token_plus_one_per_256_kib_of_body() -> None:
    assert [body_cost(n) for n in (0, 262_143, 262_144, 8 * 1024 * 1024)] == [0, 0, 1, 32]
    limiter = RateLimiter(rate_per_s=1, burst=10)
    assert limiter.take("a", 0.0) == 0.0  # the request
    assert limiter.take("a", 0.0, cost=4) == 0.0  # its 1 MiB body
    assert limiter.take("a", 0.0, cost=6) == 1.0  # one short: nothing is spent
    assert limiter.take("a", 0.0, cost=5) == 0.0


def test_a_cost_over_the_burst_is_charged_as_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=3)
    assert limiter.take("a", 0.0, cost=32) == 0.0  # payable once, with a full bucket
    assert limiter.take("a", 0.0) == 1.0
