"""Registered agents (table `agent`), tokens included: only the agent client and the admin
service read them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edgebed.controller.domain import AgentRecord
from edgebed.controller.errors import Conflict
from edgebed.controller.store.conversions import agent_from_row
from edgebed.controller.store.engine import Engine


class AgentRepository:
    """Every method is a coroutine run in the engine's thread pool."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    async def add_agent(self, record: AgentRecord) -> None:
        """Conflict when an agent of that name exists."""

        def work() -> None:
            with self._engine.write():
                if self.m.Agent.get_or_none(self.m.Agent.name == record.name) is not None:
                    raise Conflict(f"an agent named {record.name} already exists")
                self.m.Agent.create(**vars(record))

        await self._engine.run(work)

    async def get_agent(self, name: str) -> AgentRecord | None:
        def work() -> AgentRecord | None:
            row = self.m.Agent.get_or_none(self.m.Agent.name == name)
            return None if row is None else agent_from_row(row)

        return await self._engine.run(work)

    async def list_agents(self) -> list[AgentRecord]:
        """Every agent, by name."""

        def work() -> list[AgentRecord]:
            return [agent_from_row(row) for row in self.m.Agent.select().order_by(self.m.Agent.name)]

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
