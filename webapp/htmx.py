"""htmx helpers: render a whole page, or just one named block of it for an htmx request."""

from __future__ import annotations

from typing import Any

from flask import Response, make_response, render_template, request
from jinja2_fragments.flask import render_block


def is_htmx() -> bool:
    """True for an htmx request that is not a history restore (those need the full page)."""
    headers = request.headers
    return headers.get("HX-Request") == "true" and headers.get("HX-History-Restore-Request") != "true"


def render_page_or_block(template: str, block: str, status: int = 200, **context: Any) -> Response:
    """The block for htmx, the page otherwise; always ``Vary: HX-Request`` (htmx docs, caching)."""
    body = render_block(template, block, **context) if is_htmx() else render_template(template, **context)
    response = make_response(body, status)
    response.headers["Vary"] = "HX-Request"
    return response
