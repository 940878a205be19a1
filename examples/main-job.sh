#!/usr/bin/env bash
# The main job, from a fresh checkout: install ipcluster (and nothing else) into ./.venv, then run
# a parameter sweep on a local cluster, with a progress bar, on as many engines as this machine
# should give it (every core; at most 4 on a login node, where others work too).
#
#     bash examples/main-job.sh [--engines N] [--points N]
#
# Arguments go to examples/sweep.py. Afterwards `source .venv/bin/activate` puts `ipcluster` on
# PATH (the README's "From the command line").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "python3 has no venv support; installing Debian's python3-venv (needs root)" >&2
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "installing ipcluster into .venv ..." >&2
.venv/bin/python -m pip install -q -e . 2>&1 | grep -v '^WARNING: Location' || true
exec .venv/bin/python examples/sweep.py "$@"
