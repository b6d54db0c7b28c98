"""16. Every route of the OpenAPI schema, fuzzed in-process: no 5xx, no hang, and
every answer conforms to the schema the routes declare (``api/schemas.py``).

Memory store, both push endpoints open (so requests reach past their first check),
the SNS certificate fetch and subscription confirmation stubbed (nothing leaves the
machine), rate limits off (the fuzzer is one client).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from api.app import create_app
from consumers.sns import SnsVerifier
from service.runtime import Runtime
from service.settings import Settings
from tests.support.sns import LocalSigner

_signer = LocalSigner()


async def _confirm(url: str) -> None:
    return None


def _stub_outbound(runtime: Runtime) -> None:
    runtime.sns_verifier = SnsVerifier(fetch=_signer.fetch)
    runtime.confirm_subscription = _confirm


app = create_app(
    Settings(
        _env_file=None,
        sns_topic_arns="*",
        firehose_access_key="fuzz-key",
        rate_limit_per_s=0,
        max_body_bytes=256 * 1024,
        allowed_hosts="testserver",  # the Host schemathesis's in-process client names
    ),
    on_start=_stub_outbound,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.timeout(120)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_no_route_answers_5xx_or_off_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
    )
