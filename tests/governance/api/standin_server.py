"""A uvicorn factory for the process tests: the real API with the stand-in query layer (see support.py).

``CITYGOV_TEST_STANDIN_DELAY`` (seconds) makes each query that slow, to test graceful shutdown.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI

from governance.api.app import create_app
from governance.config import Settings
from governance.logs import configure_logging
from tests.governance.api.support import StandInQueryService, stand_in_backend


class SlowStandIn(StandInQueryService):
    def run(self, requester: Any, request: Any) -> Any:
        time.sleep(float(os.environ.get("CITYGOV_TEST_STANDIN_DELAY", "0")))
        return super().run(requester, request)


def app() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, backend=stand_in_backend(SlowStandIn()))
