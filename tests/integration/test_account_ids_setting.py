"""SES_TRACKER_ACCOUNT_IDS read at start-up: a bad value stops ``serve`` (#23.8)."""

from __future__ import annotations

import pytest

from tests.integration.test_settings_errors import serve_with

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_account_ids_that_are_not_twelve_digits_stop_serve_with_exit_2() -> None:
    result = serve_with({"SES_TRACKER_ACCOUNT_IDS": "123456789012,12345-secretish"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "SES_TRACKER_ACCOUNT_IDS" in result.stderr and "12-digit" in result.stderr
    assert "secretish" not in result.stderr and "Traceback" not in result.stderr
