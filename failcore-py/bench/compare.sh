#!/usr/bin/env bash
# Runs the Python call-overhead benchmark for this package and for PyPI failcore 0.1.3 in one sitting,
# each in its own venv (both import as `failcore`). Usage: failcore-py/bench/compare.sh [workdir]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d)}"
python3 -m venv "$work/this"
"$work/this/bin/pip" install --quiet "maturin>=1.7,<2"
"$work/this/bin/pip" install --quiet "$here/.."
python3 -m venv "$work/legacy"
"$work/legacy/bin/pip" install --quiet "failcore==0.1.3"
"$work/this/bin/python" "$here/overhead.py" this
"$work/legacy/bin/python" "$here/overhead.py" legacy
