"""Schema version 4: login sessions in the database, and a credential version per user.

- `user.credential_version`: random text, replaced whenever the account's password changes or its
  rights shrink (revocation, demotion). A session cookie carries the value it was issued under and
  is refused once they differ; a deleted account's new namesake gets a fresh value, so cookies of
  the old account do not open the new one. Existing users get a random value each.
- `login_session`: one row per logged-in browser session, keyed by the SHA-256 of the session id
  the cookie carries. Logging out deletes the row; a cookie whose row is gone is refused, so every
  controller on the database sees an ended session as ended.

Frozen: the column and the table are written out here as they were at version 4 and never change;
the current models live in store/models.py.
"""

from __future__ import annotations

import secrets

import peewee as pw

VERSION = 4


def frozen_models(db: pw.Database) -> list[type[pw.Model]]:
    """The table version 4 adds, as a model bound to `db` (a fresh class on each call)."""
    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class LoginSession(pw.Model):
        id_hash = pw.CharField(primary_key=True, max_length=64)
        owner = pw.CharField(max_length=254, index=True)
        created_at = pw.BigIntegerField()
        expires_at = pw.BigIntegerField(index=True)

        class Meta:
            database = proxy
            table_name = "login_session"

    return [LoginSession]


def apply(db: pw.Database) -> None:
    """Adds user.credential_version (a random value for every existing user) and the
    login_session table; runs inside the runner's transaction."""
    db.execute_sql(
        'ALTER TABLE "user" ADD COLUMN "credential_version" VARCHAR(64) NOT NULL DEFAULT \'\''
    )
    emails = [row[0] for row in db.execute_sql('SELECT "email" FROM "user"').fetchall()]
    for email in emails:
        db.execute_sql(
            f'UPDATE "user" SET "credential_version" = {db.param} WHERE "email" = {db.param}',
            (secrets.token_urlsafe(24), email),
        )
    db.create_tables(frozen_models(db))
