"""Staff-user administration (/staff): list, create, disable, unlock, roles with four-eyes, tokens.

Admins change things (``users.manage``); compliance and auditors read the same pages with every
button disabled and every POST refused (403); support cannot open them at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from tests.web.conftest import MadeUser, csrf_token, sign_in
from webapp.db import Database
from webapp.models import ApiToken, AuditEntry, RoleGrantRequest, StaffUser
from webapp.services import users

MakeUser = Callable[..., MadeUser]


def row(db: Database, user_id: str) -> StaffUser:
    with db.session() as s:
        user = s.get(StaffUser, user_id)
        assert user is not None
        user.grants  # noqa: B018 - load roles while attached
        return user


def admin_client(app: Flask, admin: MadeUser) -> FlaskClient:
    client = app.test_client()
    response = sign_in(client, admin.email, totp=admin.totp_secret)
    assert response.status_code == 302 and "/auth/" not in response.location
    return client


def post(client: FlaskClient, path: str, data: dict[str, object] | None = None) -> TestResponse:
    form = {"csrf_token": csrf_token(client, "/staff/"), **(data or {})}
    return client.post(path, data=form)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def wrong_code(secret: str | None) -> str:
    good = pyotp.TOTP(secret or "").now()
    return f"{(int(good) + 500000) % 1000000:06d}"


def audit_actions(db: Database) -> list[tuple[str, str, dict[str, object]]]:
    with db.session() as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == "platform").order_by(AuditEntry.seq)
        ).all()
        return [(r.action, r.actor, json.loads(r.payload)) for r in rows]


# --- list ------------------------------------------------------------------------------------------


def test_admin_lists_staff_with_state_and_searches(app: Flask, make_user: MakeUser, web_db: Database) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support", "finance"])
    make_user("fay@corp.test", ["finance"])
    with web_db.session() as s:
        user = s.get(StaffUser, sam.id)
        assert user is not None
        user.failed_logins = 3
    client = admin_client(app, admin)

    page = client.get("/staff/")
    assert page.status_code == 200
    body = text(page)
    for email in ("root@corp.test", "sam@corp.test", "fay@corp.test"):
        assert email in body
    sam_row = re.search(rf'<tr data-user="{sam.id}">(.*?)</tr>', body, re.S)
    assert sam_row
    cells = re.findall(r"<td>(.*?)</td>", sam_row.group(1), re.S)
    assert "finance" in cells[2] and "support" in cells[2]
    assert "active" in cells[3]
    assert cells[4].strip() == "3"
    assert "none" in cells[5]
    admin_row = re.search(rf'<tr data-user="{admin.id}">(.*?)</tr>', body, re.S)
    assert admin_row and "enrolled" in admin_row.group(1)
    assert "<time" in admin_row.group(1)  # the admin's sign-in above is recorded as the last sign-in
    assert 'id="new-user" href="/staff/new"' in body

    found = text(client.get("/staff/?q=FAY"))
    assert "fay@corp.test" in found and "sam@corp.test" not in found
    fragment = client.get("/staff/?q=sam", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert text(fragment).lstrip().startswith('<div id="results"')
    assert "No staff user matches “nobody”" in text(client.get("/staff/?q=nobody"))


def test_compliance_and_auditor_read_only_support_refused(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    sam = make_user("sam@corp.test", ["support"])
    comp = make_user("comp@corp.test", ["compliance"], totp=True)
    aud = make_user("aud@corp.test", ["auditor"])

    for reader in (comp, aud):
        client = app.test_client()
        sign_in(client, reader.email, totp=reader.totp_secret)
        page = client.get("/staff/")
        assert page.status_code == 200
        assert "sam@corp.test" in text(page)
        assert "Read-only: needs admin" in text(page)
        detail = text(client.get(f"/staff/{sam.id}"))
        assert f'action="/staff/{sam.id}/disable"' not in detail
        assert re.search(r'<button type="button" class="btn btn-danger" disabled[^>]*id="disable"', detail)
        assert f'action="/staff/{sam.id}/tokens"' not in detail
        assert client.get("/staff/new").status_code == 403
        for path in (
            f"/staff/{sam.id}/disable",
            f"/staff/{sam.id}/unlock",
            f"/staff/{sam.id}/tokens",
            "/staff/new",
        ):
            assert (
                post(
                    client, path, {"role": "finance", "email": "x@corp.test", "roles": "support"}
                ).status_code
                == 403
            )
        assert post(client, f"/staff/{sam.id}/roles", {"role": "finance"}).status_code == 403
    assert row(web_db, sam.id).active is True
    assert row(web_db, sam.id).roles == {"support"}

    support = app.test_client()
    sign_in(support, sam.email)
    assert support.get("/staff/").status_code == 403
    assert support.get(f"/staff/{sam.id}").status_code == 403
    assert "needs admin or compliance or auditor; you have support" in text(support.get("/staff/"))


# --- create ----------------------------------------------------------------------------------------


def test_admin_creates_a_user_with_a_one_time_password(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    client = admin_client(app, admin)
    created = post(
        client,
        "/staff/new",
        {"email": "New.Person@Corp.test", "display_name": "New Person", "roles": ["support", "finance"]},
    )
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    password = re.search(r'id="one-time-password">([^<]+)<', text(created))
    assert password and len(password.group(1)) >= 24

    with web_db.session() as s:
        user = users.find_user(s, "new.person@corp.test")
        assert user is not None
        assert (user.display_name, user.roles, user.active) == (
            "New Person",
            frozenset({"finance", "support"}),
            True,
        )
        assert users.verify_password(user.password_hash, password.group(1))
        new_id = user.id
    assert password.group(1) not in text(client.get(f"/staff/{new_id}"))
    assert password.group(1) not in text(client.get("/staff/"))

    newcomer = app.test_client()
    signed = sign_in(newcomer, "new.person@corp.test", password.group(1))
    assert signed.status_code == 302 and signed.location.endswith("/auth/password")  # one-time

    duplicate = post(client, "/staff/new", {"email": "new.person@corp.test", "roles": "support"})
    assert duplicate.status_code == 422
    assert "a user with this email already exists" in text(duplicate)

    created_entries = [a for a in audit_actions(web_db) if a[0] == "staff.user_created" and a[1] == admin.id]
    assert created_entries == [
        ("staff.user_created", admin.id, {"user_id": new_id, "roles": ["finance", "support"]})
    ]
    assert all("@" not in json.dumps(p) for _, _, p in audit_actions(web_db))


def test_create_refuses_conflicting_roles_and_bad_input_with_422(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    client = admin_client(app, admin)
    conflict = post(client, "/staff/new", {"email": "x@corp.test", "roles": ["admin", "compliance"]})
    assert conflict.status_code == 422
    assert re.search(
        r'<p class="field-error" id="error-roles">separation of duties: nobody may hold admin and compliance',
        text(conflict),
    )
    assert 'value="x@corp.test"' in text(conflict)
    bad = post(client, "/staff/new", {"email": "not-an-email", "roles": ["support"]})
    assert bad.status_code == 422
    assert '<p class="field-error" id="error-email">enter a valid email address</p>' in text(bad)
    none = post(client, "/staff/new", {"email": "y@corp.test"})
    assert none.status_code == 422 and "give at least one role" in text(none)
    admin_only = post(client, "/staff/new", {"email": "z@corp.test", "roles": ["admin"]})
    assert admin_only.status_code == 422 and "admin needs a second admin&#39;s approval" in text(admin_only)
    with web_db.session() as s:
        assert (
            s.scalar(
                select(StaffUser).where(StaffUser.email.in_(["x@corp.test", "y@corp.test", "z@corp.test"]))
            )
            is None
        )


def test_user_text_is_escaped(app: Flask, make_user: MakeUser) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    client = admin_client(app, admin)
    created = post(
        client,
        "/staff/new",
        {"email": "evil@corp.test", "display_name": "<script>x</script>", "roles": "support"},
    )
    assert created.status_code == 201
    assert "<script>x</script>" not in text(created) and "&lt;script&gt;x&lt;/script&gt;" in text(created)
    assert "<script>x</script>" not in text(client.get("/staff/"))
    assert "&lt;b&gt;" in text(client.get("/staff/?q=<b>"))


# --- disable, enable, unlock -----------------------------------------------------------------------


def test_disabling_a_user_signs_them_out_and_enabling_lets_them_back(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support"])
    sams = app.test_client()
    sign_in(sams, sam.email)
    assert sams.get("/auth/account").status_code == 200

    client = admin_client(app, admin)
    done = post(client, f"/staff/{sam.id}/disable")
    assert done.status_code == 303 and done.location.endswith(f"/staff/{sam.id}")
    assert row(web_db, sam.id).active is False
    refused = sams.get("/auth/account")
    assert refused.status_code == 302 and "/auth/sign-in" in refused.location
    assert "disabled" in text(client.get(f"/staff/{sam.id}"))

    self_disable = post(client, f"/staff/{admin.id}/disable")
    assert self_disable.status_code == 422
    assert "you cannot disable your own account" in text(self_disable)
    assert row(web_db, admin.id).active is True

    assert post(client, f"/staff/{sam.id}/enable").status_code == 303
    assert row(web_db, sam.id).active is True
    assert sign_in(sams, sam.email).status_code == 302
    actions = [
        (a, p)
        for a, actor, p in audit_actions(web_db)
        if actor == admin.id and a in ("staff.disabled", "staff.enabled")
    ]
    assert actions == [("staff.disabled", {"user_id": sam.id}), ("staff.enabled", {"user_id": sam.id})]


def test_admin_unlocks_a_locked_account(app: Flask, make_user: MakeUser, web_db: Database) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support"])
    other = app.test_client()
    for _ in range(users.LOCKOUT_THRESHOLD):
        sign_in(other, sam.email, "wrong password here")
    locked = row(web_db, sam.id)
    assert locked.failed_logins == 6 and locked.locked_until is not None

    client = admin_client(app, admin)
    page = text(client.get("/staff/"))
    assert re.search(rf'<tr data-user="{sam.id}">.*?locked until', page, re.S)
    assert post(client, f"/staff/{sam.id}/unlock").status_code == 303
    unlocked = row(web_db, sam.id)
    assert (unlocked.failed_logins, unlocked.locked_until) == (0, None)
    assert sign_in(other, sam.email).status_code == 302


# --- roles -----------------------------------------------------------------------------------------


def test_grant_and_revoke_with_separation_of_duties_and_no_self_grant(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support"])
    comp = make_user("comp@corp.test", ["compliance"], totp=True)
    client = admin_client(app, admin)

    assert post(client, f"/staff/{sam.id}/roles", {"role": "finance"}).status_code == 303
    assert row(web_db, sam.id).roles == {"support", "finance"}
    assert row(web_db, sam.id).session_version == 2

    conflict = post(client, f"/staff/{comp.id}/roles", {"role": "admin"})
    assert conflict.status_code == 422
    assert re.search(
        r'<p class="field-error" id="error-role">separation of duties: '
        r"nobody may hold admin and compliance together",
        text(conflict),
    )
    auditor = post(client, f"/staff/{admin.id}/roles", {"role": "auditor"})
    assert auditor.status_code == 422
    assert '<p class="field-error" id="error-role">nobody may grant a role to themselves</p>' in text(auditor)
    own = post(client, f"/staff/{admin.id}/roles", {"role": "finance"})
    assert own.status_code == 422 and "nobody may grant a role to themselves" in text(own)
    unknown = post(client, f"/staff/{sam.id}/roles", {"role": "root"})
    assert unknown.status_code == 422 and "unknown role root" in text(unknown)
    assert row(web_db, comp.id).roles == {"compliance"}
    assert row(web_db, admin.id).roles == {"admin"}

    assert post(client, f"/staff/{sam.id}/roles/finance/revoke").status_code == 303
    assert row(web_db, sam.id).roles == {"support"}
    last = post(client, f"/staff/{sam.id}/roles/support/revoke")
    assert last.status_code == 422 and "a user keeps at least one role" in text(last)
    with web_db.session() as s:
        assert s.scalars(select(RoleGrantRequest)).all() == []


def test_admin_grant_needs_a_second_admin_with_a_totp_code(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    first = make_user("root@corp.test", ["admin"], totp=True)
    second = make_user("ops@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support"])
    one = admin_client(app, first)

    asked = post(one, f"/staff/{sam.id}/roles", {"role": "admin"})
    assert asked.status_code == 303
    assert row(web_db, sam.id).roles == {"support"}
    with web_db.session() as s:
        request = s.scalars(select(RoleGrantRequest)).one()
        assert (request.user_id, request.role, request.requested_by, request.status) == (
            sam.id,
            "admin",
            first.id,
            "pending",
        )
        request_id = request.id
    again = post(one, f"/staff/{sam.id}/roles", {"role": "admin"})
    assert again.status_code == 422 and "already waits for approval" in text(again)

    page = text(one.get(f"/staff/{sam.id}"))
    assert f'action="/staff/requests/{request_id}/approve"' not in page
    assert "you asked for this grant: a second admin must approve it (four-eyes)" in page
    own = post(one, f"/staff/requests/{request_id}/approve", {"code": first.code()})
    assert own.status_code == 403
    assert "you asked for this grant: a second admin must approve it (four-eyes)" in text(own)

    two = admin_client(app, second)
    assert f'data-request="{request_id}"' in text(two.get("/staff/"))
    assert f'action="/staff/requests/{request_id}/approve"' in text(two.get(f"/staff/{sam.id}"))
    wrong = post(two, f"/staff/requests/{request_id}/approve", {"code": wrong_code(second.totp_secret)})
    assert wrong.status_code == 422
    assert (
        f'<p class="field-error" id="error-code-{request_id}">the authenticator code is wrong or expired</p>'
        in text(wrong)
    )
    assert row(web_db, sam.id).roles == {"support"}

    approved = post(two, f"/staff/requests/{request_id}/approve", {"code": second.code()})
    assert approved.status_code == 303
    assert row(web_db, sam.id).roles == {"support", "admin"}
    with web_db.session() as s:
        done = s.get(RoleGrantRequest, request_id)
        assert done is not None and (done.status, done.decided_by) == ("approved", second.id)
        grant = [g for g in s.get(StaffUser, sam.id).grants if g.role == "admin"]  # type: ignore[union-attr]
        assert grant[0].granted_by == second.id
    twice = post(two, f"/staff/requests/{request_id}/approve", {"code": second.code()})
    assert twice.status_code == 409

    entries = [
        (a, actor, p)
        for a, actor, p in audit_actions(web_db)
        if "role_grant" in a or a == "staff.role_granted"
    ]
    assert entries == [
        (
            "staff.role_grant_requested",
            first.id,
            {"user_id": sam.id, "role": "admin", "request_id": request_id},
        ),
        ("staff.role_granted", second.id, {"user_id": sam.id, "role": "admin"}),
        (
            "staff.role_grant_approved",
            second.id,
            {"user_id": sam.id, "role": "admin", "request_id": request_id, "requested_by": first.id},
        ),
    ]


def test_admin_grant_can_be_rejected_and_grantee_cannot_approve(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    first = make_user("root@corp.test", ["admin"], totp=True)
    second = make_user("ops@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support"], totp=True)
    one = admin_client(app, first)
    created = post(one, "/staff/new", {"email": "new@corp.test", "roles": ["support", "admin"]})
    assert created.status_code == 201 and "a second admin must approve" in text(created)
    with web_db.session() as s:
        new_user = users.find_user(s, "new@corp.test")
        assert new_user is not None and new_user.roles == {"support"}
        pending = s.scalars(select(RoleGrantRequest).where(RoleGrantRequest.user_id == new_user.id)).one()
        pending_id = pending.id
    two = admin_client(app, second)
    # A card number in the note is refused like in every free-text input, and nothing is decided.
    carded = post(two, f"/staff/requests/{pending_id}/reject", {"note": "card 4242 4242 4242 4242"})
    assert carded.status_code == 422 and "card number" in text(carded)
    with web_db.session() as s:
        assert s.get(RoleGrantRequest, pending_id).status == "pending"  # type: ignore[union-attr]
    assert post(two, f"/staff/requests/{pending_id}/reject").status_code == 303
    with web_db.session() as s:
        assert s.get(RoleGrantRequest, pending_id).status == "rejected"  # type: ignore[union-attr]
        assert s.get(StaffUser, new_user.id).roles == {"support"}  # type: ignore[union-attr]

    # A request for an admin cannot be approved by the admin it is for (nor by a non-admin: 403).
    assert post(one, f"/staff/{sam.id}/roles", {"role": "admin"}).status_code == 303
    with web_db.session() as s:
        request_id = s.scalars(select(RoleGrantRequest).where(RoleGrantRequest.status == "pending")).one().id
    sams = app.test_client()
    sign_in(sams, sam.email, totp=sam.totp_secret)
    assert post(sams, f"/staff/requests/{request_id}/approve", {"code": sam.code()}).status_code == 403
    assert row(web_db, sam.id).roles == {"support"}


# --- API tokens ------------------------------------------------------------------------------------


def test_token_is_shown_once_then_only_listed_and_can_be_revoked(
    app: Flask, make_user: MakeUser, web_db: Database
) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    sam = make_user("sam@corp.test", ["support"])
    client = admin_client(app, admin)

    made = post(client, f"/staff/{sam.id}/tokens")
    assert made.status_code == 201
    assert made.headers["Cache-Control"] == "no-store"
    token = re.search(r'id="new-token">(mct_[^<]+)<', text(made))
    assert token
    with web_db.session() as s:
        stored = s.scalars(select(ApiToken).where(ApiToken.user_id == sam.id)).one()
        assert stored.token_hash == users.token_hash(token.group(1))
        token_id = stored.id
        assert users.user_for_token(s, token.group(1), now=datetime.now(UTC)) is not None

    listed = text(client.get(f"/staff/{sam.id}"))
    assert token.group(1) not in listed
    assert f'<tr data-token="{token_id}">' in listed and "valid" in listed

    assert post(client, f"/staff/other-user/tokens/{token_id}/revoke").status_code == 404
    assert post(client, f"/staff/{sam.id}/tokens/{token_id}/revoke").status_code == 303
    with web_db.session() as s:
        assert users.user_for_token(s, token.group(1), now=datetime.now(UTC)) is None
    assert re.search(rf'<tr data-token="{token_id}">.*?revoked', text(client.get(f"/staff/{sam.id}")), re.S)
    actions = [(a, p) for a, actor, p in audit_actions(web_db) if a.startswith("staff.token_")]
    assert actions == [
        ("staff.token_created", {"user_id": sam.id, "token_id": token_id}),
        ("staff.token_revoked", {"user_id": sam.id, "token_id": token_id}),
    ]


def test_unknown_user_is_404(app: Flask, make_user: MakeUser) -> None:
    admin = make_user("root@corp.test", ["admin"], totp=True)
    client = admin_client(app, admin)
    assert client.get("/staff/u-nobody").status_code == 404
    assert post(client, "/staff/u-nobody/roles", {"role": "finance"}).status_code == 404
    assert post(client, "/staff/requests/rgr-nothing/approve", {"code": admin.code()}).status_code == 404
