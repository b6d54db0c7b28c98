"""AWS MSK IAM authentication for the Kafka consumer: SASL/OAUTHBEARER with a token
signed by the AWS credentials the process already has (IRSA, instance role, env),
made by AWS's maintained signer library."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka.abc import AbstractTokenProvider

# Renew this long before the token expires (MSK tokens last 15 minutes).
RENEW_BEFORE_MS = 60_000


def _sign(region: str) -> tuple[str, int]:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    return MSKAuthTokenProvider.generate_auth_token(region)


class MskIamTokenProvider(AbstractTokenProvider):
    """One signed token, reused until a minute before it expires."""

    def __init__(
        self,
        region: str,
        *,
        sign: Callable[[str], tuple[str, int]] = _sign,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.region = region
        self._sign = sign
        self._clock_ms = clock_ms
        self._token: str | None = None
        self._expires_ms = 0
        self.signed = 0

    async def token(self) -> str:
        if self._token is None or self._clock_ms() >= self._expires_ms - RENEW_BEFORE_MS:
            # The signer may fetch credentials over the network: off the event loop.
            self._token, self._expires_ms = await asyncio.to_thread(self._sign, self.region)
            self.signed += 1
        return self._token
