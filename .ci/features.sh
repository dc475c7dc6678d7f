#!/usr/bin/env bash
# Each feature of the failcore crate must compile alone (without the defaults) and all together, library,
# binary, tests and examples alike. Run from the repository root.
set -euo pipefail

features=(jsonl cli llm-proxy mcp-proxy sqlite postgres schema mcp rig otel)

run() {
    echo "+ cargo $*"
    cargo "$@"
}

run check -p failcore --no-default-features --all-targets
for f in "${features[@]}"; do
    run check -p failcore --no-default-features --features "$f" --all-targets
done
run check -p failcore --all-features --all-targets
# The examples and end-to-end tests of the integrations (root package).
for f in mcp rig otel; do
    run check -p failcore-workspace --features "$f" --all-targets
done
echo "features: all combinations compile"
