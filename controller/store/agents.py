"""Registered agents (table `agent`), tokens included: only the agent client and the admin
service read them. Tokens are stored sealed (store/sealing.py) and opened when a row is read."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

from edgebed.controller.domain import DISCONNECTED, AgentRecord
from edgebed.controller.errors import Conflict
from edgebed.controller.store.conversions import agent_from_row
from edgebed.controller.store.engine import Engine
from edgebed.controller.store.sealing import SEALED_PREFIX, Sealer, SealError

log = logging.getLogger(__name__)

# The last_error of an agent whose stored token this controller cannot open.
UNREADABLE_TOKEN = (
    "its token cannot be decrypted with this controller's secret key (was secret_key_file "
    "replaced?): restore that file, or delete the agent and add it again"
)


class AgentRepository:
    """Every method is a coroutine run in the engine's thread pool (seal_plaintext_tokens runs
    inside one). An agent whose token cannot be opened reads as `disconnected`, with token ""
    and UNREADABLE_TOKEN as its last_error, so that nothing calls it with a wrong token."""

    def __init__(self, engine: Engine, models: SimpleNamespace, sealer: Sealer) -> None:
        self._engine = engine
        self.m = models
        self._sealer = sealer

    def _record(self, row: Any) -> AgentRecord:
        record = agent_from_row(row)
        try:
            return dataclasses.replace(record, token=self._sealer.unseal(record.token))
        except SealError:
            return dataclasses.replace(record, token="", status=DISCONNECTED, last_error=UNREADABLE_TOKEN)

    def seal_plaintext_tokens(self) -> int:
        """Seals in place every token an older controller stored in clear, in one transaction,
        and logs an error for each sealed token this key cannot open. Idempotent; run by
        Store.open after the schema migrations (it needs the key, which they do not have).
        Returns how many tokens it sealed. Runs in a pool thread, inside a connection."""
        with self._engine.write():
            rows = list(self.m.Agent.select(self.m.Agent.name, self.m.Agent.token))
            sealed = 0
            for row in rows:
                if row.token.startswith(SEALED_PREFIX):
                    try:
                        self._sealer.unseal(row.token)
                    except SealError:
                        log.error("agent %s: %s", row.name, UNREADABLE_TOKEN)
                    continue
                self.m.Agent.update(token=self._sealer.seal(row.token)).where(
                    self.m.Agent.name == row.name
                ).execute()
                sealed += 1
        if sealed:
            log.info("sealed %d agent token(s) stored in clear by an older controller", sealed)
        return sealed

    async def add_agent(self, record: AgentRecord) -> None:
        """Conflict when an agent of that name exists."""

        def work() -> None:
            with self._engine.write():
                if self.m.Agent.get_or_none(self.m.Agent.name == record.name) is not None:
                    raise Conflict(f"an agent named {record.name} already exists")
                self.m.Agent.create(**{**vars(record), "token": self._sealer.seal(record.token)})

        await self._engine.run(work)

    async def get_agent(self, name: str) -> AgentRecord | None:
        def work() -> AgentRecord | None:
            row = self.m.Agent.get_or_none(self.m.Agent.name == name)
            return None if row is None else self._record(row)

        return await self._engine.run(work)

    async def list_agents(self) -> list[AgentRecord]:
        """Every agent, by name."""

        def work() -> list[AgentRecord]:
            return [self._record(row) for row in self.m.Agent.select().order_by(self.m.Agent.name)]

        return await self._engine.run(work)

    async def statuses(self) -> dict[str, str]:
        """{agent name: status} of every agent (no token unsealed: cheap, for each page)."""

        def work() -> dict[str, str]:
            Agent = self.m.Agent
            return dict(Agent.select(Agent.name, Agent.status).tuples())

        return await self._engine.run(work)

    async def set_agent_status(
        self, name: str, *, status: str | None = None, last_error: str | None = None
    ) -> None:
        """Sets what is given (status: connected/disconnected; last_error: "" clears it); no
        write when neither is. Nothing for an unknown agent."""
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if last_error is not None:
            changes["last_error"] = last_error
        if not changes:
            return

        def work() -> None:
            self.m.Agent.update(**changes).where(self.m.Agent.name == name).execute()

        await self._engine.run(work)

    async def delete_agent(self, name: str) -> bool:
        """Removes the agent with its cached nodes, its catalog and a removal request waiting
        for it, in one transaction; False for an unknown agent. Conflict, with nothing removed,
        while one of its nodes has a reservation (the caller checks first and says which; this
        is the check a reservation made meanwhile cannot slip past). Nodes in maintenance stay
        there (node_maintenance is keyed by node name)."""

        def work() -> bool:
            Node, S, R = self.m.Node, self.m.Schedule, self.m.Retirement
            with self._engine.write():
                nodes = [row.name for row in self._engine.lock(Node.select(Node.name).where(Node.agent == name))]
                for start in range(0, len(nodes), 500):
                    if S.select().where(S.node_name.in_(nodes[start : start + 500])).exists():
                        raise Conflict(f"agent {name} has reservations; they must end first")
                Node.delete().where(Node.agent == name).execute()
                self.m.Catalog.delete().where(self.m.Catalog.agent == name).execute()
                R.delete().where((R.kind == "agent") & (R.name == name)).execute()
                return self.m.Agent.delete().where(self.m.Agent.name == name).execute() > 0

        return await self._engine.run(work)
