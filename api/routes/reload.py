"""``POST /-/reload`` (admin port): re-read the rules and forwarding files now."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.responses import OrjsonResponse
from service import audit

router = APIRouter()


@router.post("/-/reload")
async def reload(runtime: RuntimeDep) -> OrjsonResponse:
    """Re-read ``SES_TRACKER_ALERT_RULES`` and ``SES_TRACKER_FORWARD_FILE``.

    ``200`` when every file was read and now runs; ``422`` when one failed: the
    running configuration of that file stays, and ``files`` says why, with file and
    line (``service.reload``).
    """
    outcomes = await runtime.config_files.reload(actor=audit.ADMIN_PORT)
    files = [outcome.answer() for outcome in outcomes]
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        error = "; ".join(f"{outcome.file}: kept the running configuration" for outcome in failed)
        return OrjsonResponse({"error": error, "files": files}, status_code=422)
    return OrjsonResponse({"files": files})
