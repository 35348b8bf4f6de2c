"""A hardware lab for the real raspberry driver: an SNMP PoE switch (snmpsim), Pis as network
namespaces with loop-device SD cards, an image server, and a firmware that boots each Pi's
maintenance system (network boot) or its card's system, each with a real sshd.

Root and Linux only. Start it with `scripts/lab up` or `python -m edgebed.lab up`, or from Python
with `async with Lab(directory, pis=2) as lab: ...`; see docs/lab.md.

Sensor boards for the real sensor driver (QEMU micro:bits, no root needed) are a lab of their
own: `python -m edgebed.lab.boards up` (edgebed/lab/boards.py, docs/lab.md "Sensor boards").

The names below are imported on first use, so that `python -m edgebed.lab.boot`, which every lab
Pi runs at each boot, does not pay for importing pysnmp.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Lab": "edgebed.lab.lab", "clean": "edgebed.lab.lab", "status": "edgebed.lab.lab",
    "missing_prerequisites": "edgebed.lab.lab",
    "LabDescription": "edgebed.lab.description", "SwitchDescription": "edgebed.lab.description",
    "PiHardware": "edgebed.lab.firmware", "TestImage": "edgebed.lab.image",
    "LabError": "edgebed.lab.proc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgebed.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
