"""App factory basics: deny by default, every route declares a permission, health, security headers."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from webapp import create_app
from webapp.config import Config


def make_app(tmp_path: Path) -> Flask:
    config = Config.from_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}, testing=True)
    from webapp.migrate import upgrade

    upgrade(config.database_url)
    return create_app(config)


def test_every_route_declares_a_permission_decision(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    missing = [
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not hasattr(app.view_functions[rule.endpoint], "permission")
    ]
    assert missing == []


def test_healthz_reports_db_and_queue(tmp_path: Path) -> None:
    response = make_app(tmp_path).test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "db": "ok", "queue": "ok"}
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_app_refuses_to_start_without_secret_key_outside_demo_and_tests() -> None:
    import pytest

    from webapp.config import ConfigError

    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Config.from_env({})
