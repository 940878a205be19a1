#!/usr/bin/env bash
# MPI for the tests: MPICH (the `mpich` wheel: ./.venv/bin/mpiexec) and Open MPI (Debian's
# openmpi-bin: mpiexec.openmpi), and mpi4py in ./.venv. `mpi.sh packages`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

packages() {
  command -v mpiexec.openmpi >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends openmpi-bin >/dev/null
  .venv/bin/python -c 'import mpi4py' 2>/dev/null && [ -x .venv/bin/mpiexec ] && return
  .venv/bin/python -m pip install -q -e ".[mpi]" mpich 2>&1 | grep -v '^WARNING: Location' || true
}

"$@"
