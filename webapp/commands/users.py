"""``marketplace users create|token|disable|unlock``: staff accounts from the command line.

``create`` prints a generated password once unless ``--password-stdin`` is given; ``token`` prints a
new API token once (only its SHA-256 is stored). Bad input (unknown role, separation-of-duties
conflict, bad email, short password, unknown user) prints why on standard error and exits 2.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import NoReturn

import click

from webapp.config import Config
from webapp.db import Database


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _database() -> Database:

    config = Config.from_env(testing=True)  # account commands need the database, not SECRET_KEY
    return Database(config.database_url)


def register(main: click.Group) -> None:
    """Add the ``users`` group."""

    @main.group("users")
    def users_group() -> None:
        """Staff users, role grants and API tokens."""

    @users_group.command("create")
    @click.option("--email", required=True, help="The user's email (sign-in name).")
    @click.option("--role", "roles", multiple=True, required=True, help="A role; repeat for several.")
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
    @click.option("--display-name", default=None, help="Name shown in the console.")
    def create_command(
        email: str, roles: tuple[str, ...], password_stdin: bool, display_name: str | None
    ) -> None:
        """Create a staff user with one or more roles (separation of duties applies)."""
        from webapp.services import users

        generated = not password_stdin
        password = users.generate_password() if generated else sys.stdin.readline().rstrip("\r\n")
        db = _database()
        try:
            with db.session() as s:
                user = users.create_user(
                    s,
                    email,
                    roles,
                    password,
                    granted_by="cli",
                    now=datetime.now(UTC),
                    display_name=display_name,
                    # A generated password was seen by whoever ran the command: the user replaces it
                    # at the first sign-in. A password given on stdin is the user's own.
                    one_time_password=generated,
                )
                user_id, address, held = user.id, user.email, sorted(user.roles)
        except users.UserError as exc:
            _fail(exc.message)
        finally:
            db.dispose()
        click.echo(f"created {address} ({user_id}) with roles {', '.join(held)}")
        if generated:
            click.echo(f"password (shown once; to be changed at the first sign-in): {password}")
        if users.totp_required(held):
            click.echo("this user must enrol a TOTP second factor at first sign-in")

    @users_group.command("token")
    @click.option("--email", required=True)
    def token_command(email: str) -> None:
        """Create an API token (valid 90 days) and print it once."""
        from webapp.services import users

        db = _database()
        try:
            with db.session() as s:
                user = users.find_user(s, email)
                if user is None or not user.active:
                    _fail(f"no active user {email}")
                row, token = users.create_token(s, user.id, now=datetime.now(UTC), by="cli")
                expires = row.expires_at
        finally:
            db.dispose()
        click.echo(token)
        click.echo(f"token for {users.normalize_email(email)} expires {expires:%Y-%m-%d %H:%M} UTC", err=True)

    @users_group.command("disable")
    @click.option("--email", required=True)
    def disable_command(email: str) -> None:
        """Disable a user: sign-in, sessions and API tokens stop working at once."""
        _set_active(email, active=False)

    @users_group.command("enable")
    @click.option("--email", required=True)
    def enable_command(email: str) -> None:
        """Re-enable a disabled user."""
        _set_active(email, active=True)

    @users_group.command("unlock")
    @click.option("--email", required=True)
    def unlock_command(email: str) -> None:
        """Release a sign-in lockout before its 30 minutes are over."""
        from webapp.services import users

        db = _database()
        try:
            with db.session() as s:
                user = users.find_user(s, email)
                if user is None:
                    _fail(f"no user {email}")
                users.unlock(s, user.id, by="cli", now=datetime.now(UTC))
        finally:
            db.dispose()
        click.echo(f"unlocked {users.normalize_email(email)}")


def _set_active(email: str, *, active: bool) -> None:
    from webapp.services import users

    db = _database()
    try:
        with db.session() as s:
            user = users.find_user(s, email)
            if user is None:
                _fail(f"no user {email}")
            users.set_active(s, user.id, active, by="cli", now=datetime.now(UTC))
    finally:
        db.dispose()
    click.echo(f"{'enabled' if active else 'disabled'} {users.normalize_email(email)}")
