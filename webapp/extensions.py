"""Extension objects, created unbound; ``create_app`` binds them (Flask app-factory pattern)."""

from __future__ import annotations

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
csrf = CSRFProtect()
