#!/bin/sh
# Builds the peer bench (both packages) and runs every case, printing the table of docs/BENCHMARKS.md
# ("Beside the peers"). Needs valgrind for the instruction counts. The Postgres cases run when
# PEERS_PG_URL is set, e.g. PEERS_PG_URL=postgres://postgres@127.0.0.1:5432/test bench/peers/run.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --target-dir "$target"
cargo build --release --quiet --manifest-path "$here/durare/Cargo.toml" --target-dir "$target"
exec "$target/release/peers" all "$target/release/peers-durare"
