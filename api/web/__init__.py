"""Web pages (Jinja2, templates/ at the top of the repo) for MDTs, clinicians, patients and auditors.

Served by the same FastAPI app under /app (and / redirects there). The pages reuse the API's own
query and service functions (api/routers/*) rather than calling HTTP, so they apply the same
permissions, MDT / practice / locality scoping, pseudonymisation and access logging.

- Login: the API's session cookie (same token, same revocation); forms POST with a CSRF token.
- No JavaScript: forms, links, <details>; charts are server-rendered SVG (api/web/charts.py).
- None of these routes is in the OpenAPI schema (they are pages, not the API).
"""
from api.web.app import mount  # noqa: F401
