"""ASGI entry point for uvicorn (`carepath serve`): settings from the environment.

    DATABASE_URL           registry database (default sqlite:///var/carepath.db)
    CAREPATH_PROTOCOLS     protocol folder (default protocols/)
    CAREPATH_SECRET_KEY    token signing key (default: a random key kept in the database)
    CAREPATH_TOKEN_TTL     token / session lifetime in seconds (default 8 hours)
    CAREPATH_COOKIE_SECURE the session cookie is Secure (default; `carepath serve` on loopback sets 0)

The full list: docs/operations.md, "Settings".
"""
from __future__ import annotations

import os
from pathlib import Path

from api.app import create_app

app = create_app(os.environ.get("DATABASE_URL") or None, Path(os.environ.get("CAREPATH_PROTOCOLS", "protocols")))
