"""The Flask console: ``create_app`` binds extensions, the runtime and every blueprint.

Blueprints live in ``webapp/blueprints/<name>.py`` (each exposes ``bp``) and are registered in name
order. Every view declares its permission (``webapp.policy.permission``/``public``); one
``before_request`` hook enforces it, for HTML pages and the JSON API alike, and refuses any view
that declares nothing (deny by default).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, after_this_request, g, jsonify, render_template, request
from flask_login import current_user
from jinja2 import StrictUndefined
from werkzeug.exceptions import HTTPException

from webapp.config import Config
from webapp.extensions import csrf, login_manager
from webapp.policy import Forbidden, can, why_not
from webapp.runtime import Runtime

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
"""Content Security Policy the vendored htmx and plotly.js satisfy (no inline scripts, no eval)."""


def create_app(config: Config | None = None, *, runtime: Runtime | None = None) -> Flask:
    """Build the console for ``config`` (from the environment when omitted)."""
    config = config or Config.from_env()
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config.update(
        SECRET_KEY=config.secret_key,
        TESTING=config.testing,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=not (config.demo or config.testing),
        REMEMBER_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=1 * 1024 * 1024,
    )
    app.jinja_env.undefined = StrictUndefined
    app.extensions["runtime"] = runtime or Runtime.from_config(config)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = "strong"

    import webapp.blueprints as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"webapp.blueprints.{info.name}")
        app.register_blueprint(module.bp)
        if getattr(module, "csrf_exempt", False):
            csrf.exempt(module.bp)

    app.before_request(_open_step_up_tally)
    app.before_request(_enforce_permission)
    app.after_request(_security_headers)
    app.teardown_request(_count_step_up_failures)
    app.teardown_request(_flush_decision_latency)
    app.register_error_handler(Forbidden, _forbidden)
    app.register_error_handler(HTTPException, _http_error)
    return app


def runtime() -> Runtime:
    """The runtime of the current app."""
    from flask import current_app

    rt: Runtime = current_app.extensions["runtime"]
    return rt


def relay_after_response(outbox_ids: Sequence[int]) -> None:
    """Hand outbox rows to the queue once this request's transaction has committed (STYLE amendment).

    Called by views right after ``fire_event``; the relay runs after the view returns, i.e. after the
    ``with db.session()`` block committed. Anything it misses is delivered by the periodic relay.
    """
    if not outbox_ids:
        return
    rt = runtime()
    ids = list(outbox_ids)

    @after_this_request
    def _relay(response: Response) -> Response:
        from webapp.jobs import after_commit

        after_commit(rt, ids)
        return response


def _open_step_up_tally() -> None:
    """Collect this request's wrong step-up codes (``webapp.services.users.STEP_UP_FAILURES``)."""
    from webapp.services.users import STEP_UP_FAILURES

    g.step_up_token = STEP_UP_FAILURES.set([])


def _count_step_up_failures(_exc: BaseException | None) -> None:
    """After the request's own transaction is over, count its wrong step-up codes in a new one."""
    from webapp.services.users import STEP_UP_FAILURES, record_step_up_failures

    token = g.pop("step_up_token", None)
    failures = STEP_UP_FAILURES.get()
    if token is not None:
        STEP_UP_FAILURES.reset(token)
    if failures:
        with runtime().db.session() as session:
            record_step_up_failures(session, failures, now=datetime.now(UTC))


def _flush_decision_latency(_exc: BaseException | None) -> None:
    """Add this process's decision latencies to the dashboards' rollup, at most once a minute."""
    from webapp.services.rollups import flush_latency_every

    try:
        flush_latency_every(runtime(), datetime.now(UTC))
    except Exception:  # a metrics write must never break a response that was already made
        log.exception("flushing decision latencies failed")


def _enforce_permission() -> Any:
    """Deny by default: every endpoint declares a permission; check it before the view runs."""
    if request.endpoint is None:
        return None
    if request.endpoint == "static":
        return None
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint)
    if view is None or not hasattr(view, "permission"):
        abort(403, description="this page declares no permission")
    capability = view.permission
    g.capability = capability
    if capability is None:
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    roles: frozenset[str] = frozenset(getattr(current_user, "roles", ()))
    if not can(roles, capability):
        raise Forbidden(capability, why_not(roles, capability))
    return None


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _forbidden(exc: Forbidden) -> Any:
    if _wants_json():
        return jsonify({"error": {"code": "forbidden", "message": exc.message}}), 403
    return render_template("errors/error.html", status=403, title="Not allowed", message=exc.message), 403


def _http_error(exc: HTTPException) -> Any:
    status = exc.code or 500
    message = exc.description or exc.name
    if _wants_json():
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": message}}), status
    return render_template("errors/error.html", status=status, title=exc.name, message=message), status


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response
