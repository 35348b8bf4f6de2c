# Sourced by scripts/test and scripts/lint: creates or reuses the venv ($EDGEBED_VENV, default
# .venv) and installs edgebed with its test extras when pyproject.toml is newer than the last
# install. Leaves $venv set.
venv="${EDGEBED_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.edgebed-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
fi
