"""The controller package never imports the web package: the web serves the controller, not the
other way round (`edgebed controller` and the demo are composed in edgebed/)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import edgebed.controller

WEB = "edgebed.web"


def controller_files() -> list[Path]:
    [root] = edgebed.controller.__path__
    files = sorted(Path(root).rglob("*.py"))
    assert any(f.name == "app.py" for f in files), files
    return files


def _module_name(path: Path) -> str:
    [root] = edgebed.controller.__path__
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["edgebed.controller", *parts])


def _is_web(name: str) -> bool:
    return name == WEB or name.startswith(WEB + ".")


def web_imports(path: Path) -> list[str]:
    """web_imports_in for one file of the controller package."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    return web_imports_in(path.read_text(encoding="utf-8"), package)


def web_imports_in(source: str, package: str) -> list[str]:
    """Every import of the web package in `source` (a module of `package`), at any depth
    (functions included), as "line: what": absolute, relative and `from edgebed import web`
    forms, and module names given to importlib as text."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value.partition(":")[0]] if node.value.startswith(WEB) else []
        found += [f"{node.lineno}: {name}" for name in names if _is_web(name)]
    return found


def test_no_controller_module_imports_the_web_package_even_inside_a_function():
    offenders = {str(path): hits for path in controller_files() if (hits := web_imports(path))}
    assert offenders == {}


def test_the_scan_finds_each_form_of_import():
    # The scan itself must be able to fail: each form below is one web import.
    forms = [
        "import edgebed.web.app",
        "from edgebed.web.app import create_app",
        "from edgebed import web",
        "from ..web import keys",
        "def later():\n    from edgebed.web import api",
        "HANDLER = 'edgebed.web.app:create_app'",
    ]
    for form in forms:
        assert web_imports_in(form + "\n", "edgebed.controller"), form
    assert web_imports_in("from ..web import keys\n", "edgebed.controller.store") == []
    assert web_imports_in("from edgebed.controller import app\nimport edgebed.webhooks\n", "edgebed.controller") == []


def test_importing_every_controller_module_loads_nothing_of_the_web():
    modules = [_module_name(path) for path in controller_files()]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m == {WEB!r} or m.startswith({WEB + '.'!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
