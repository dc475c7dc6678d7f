"""Per-call overhead of a recorded Python tool, beside the bare call, in one process.

    python failcore-py/bench/overhead.py this      # this package: record, then resume (served)
    python failcore-py/bench/overhead.py legacy    # PyPI failcore 0.1.3's @guard, in its own venv

Both print one JSON line: median nanoseconds per call over batches (and the spread), for the bare
function and each mode. `failcore-py/bench/compare.sh` runs both in one sitting and prints the table that
docs/BENCHMARKS.md quotes.
"""

import json
import os
import statistics
import sys
import tempfile
import time

CALLS = int(os.environ.get("BENCH_CALLS", "2000"))
BATCHES = int(os.environ.get("BENCH_BATCHES", "7"))


def add(a, b):
    return a + b


def per_call(fn, calls=CALLS, batches=BATCHES):
    """Median and spread of ns per call over `batches` batches of `calls` calls, each call distinct."""
    samples = []
    n = 0
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn(n, 1)
            n += 1
        samples.append((time.perf_counter_ns() - start) / calls)
    return {"median_ns": statistics.median(samples), "min_ns": min(samples), "max_ns": max(samples)}


def this_package():
    import failcore

    tool = failcore.tool(effect="pure", name="bench_add")(add)
    out = {"bare": per_call(add)}
    store = tempfile.mkdtemp(prefix="failcore-bench-")
    with failcore.session(dir=store) as recorded:
        out["recorded"] = per_call(tool)
    # The same calls again, served from the trace.
    with failcore.session(dir=store, resume=recorded.run_id):
        out["served_on_resume"] = per_call(tool)
    return out


def legacy():
    import failcore

    out = {"bare": per_call(add)}
    trace = os.path.join(tempfile.mkdtemp(prefix="failcore-legacy-"), "trace.jsonl")
    with failcore.run(policy=None, trace=trace, allow_outside_root=True,
                      allowed_trace_roots=[os.path.dirname(trace)]):
        guarded = failcore.guard(add)
        out["recorded"] = per_call(guarded)
    return out


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "this"
    result = this_package() if which == "this" else legacy()
    print(json.dumps({"impl": which, "calls": CALLS, "batches": BATCHES, **result}))
