# Sourced by .ci/demo and .ci/test: make ./.venv with the given pip extras installed.
# On a fresh Debian machine python3 may lack venv support: install it first (needs root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[$1]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import ipcluster' # fail here, clearly, if the install did not work
