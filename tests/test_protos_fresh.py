"""The generated code in edgebed/v1 must match protos/: regenerate and compare byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            str(ROOT / "protos/edgebed/v1/agent.proto"),
        ],
        check=True,
    )
    generated = sorted(p.name for p in (tmp_path / "edgebed/v1").iterdir())
    assert generated == ["agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py"]
    stale = [
        name for name in generated
        if (tmp_path / "edgebed/v1" / name).read_bytes() != (ROOT / "edgebed/v1" / name).read_bytes()
    ]
    assert not stale, f"edgebed/v1/{stale} out of date with protos/: run scripts/gen-protos"


def test_generated_code_imports_with_pinned_runtime() -> None:
    from edgebed.v1 import agent_pb2, agent_pb2_grpc

    assert agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name == "edgebed.v1.Agent"
    assert hasattr(agent_pb2_grpc, "AgentStub")
