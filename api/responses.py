"""JSON responses serialized by orjson, straight from plain data."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """Routes return this directly, so FastAPI skips its generic encoder pass."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
