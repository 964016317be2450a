#!/usr/bin/env bash
# Set up from nothing (.venv + pinned dependencies) and run the whole test suite (CPU, about 9 minutes on 2 cores).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k patchnce`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup.sh"
cd "$REPO"
exec python -m pytest "$@"
