"""The controller's schema migrations: one module per schema version (v001.py, v002.py, ...),
each with the frozen models or DDL of that version, and the runner that applies them in order.
Frozen means a step never uses the current models (store/models.py), so a later change to them
cannot alter what an old step does to an old database."""

from edgebed.controller.store.migrations.runner import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    schema_version,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]
