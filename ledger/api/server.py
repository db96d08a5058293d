"""Run the app under gunicorn: each worker process builds its own app and Ledger."""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication


class LedgerServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code rather than by a config file."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        return create_app()


def _post_fork(server: Any, worker: Any) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(message)s")


def serve(host: str, port: int, workers: int, threads: int = 4) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests get ``graceful_timeout`` to finish."""
    LedgerServer({
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "accesslog": None,  # our own access log records route patterns, never raw paths
        "errorlog": "-",
        "loglevel": "info",
        "graceful_timeout": 20,
        "timeout": 60,
        "limit_request_line": 4094,
        "limit_request_fields": 50,
        "post_fork": _post_fork,
        "preload_app": False,
    }).run()
