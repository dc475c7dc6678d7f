import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def failcore_command():
    """The `failcore` command of the installed package (beside this interpreter), else `python -m failcore`."""
    exe = os.path.join(os.path.dirname(sys.executable), "failcore")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("failcore")
    return [found] if found else [sys.executable, "-m", "failcore"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILCORE_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(store, *args, check=True):
    """Runs the installed `failcore` command on the store `store`; returns the completed process."""
    p = subprocess.run(
        failcore_command() + ["--store", str(store)] + list(args),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    if check and p.returncode != 0:
        raise AssertionError("failcore %s exited %d: %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def show(store, run):
    """The steps of a run, as `failcore show --json` prints them."""
    lines = [json.loads(l) for l in cli(store, "show", run, "--json").stdout.splitlines() if l]
    assert lines[0]["schema"] == "failcore.show/1"
    return lines[0], [l for l in lines if l.get("type") == "step"], [l for l in lines if l.get("type") == "end"]


def resumed_run(store):
    """The store holds two runs, the second resuming the first and ended ok: its id and its steps."""
    listing = json.loads(cli(store, "list", "--json").stdout)["runs"]
    assert len(listing) == 2
    resumed, crashed = listing
    assert resumed["resumed_from"] == crashed["run"] and resumed["status"] == "ok"
    return resumed["run"], show(store, resumed["run"])[1]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh trace directory; FAILCORE_* variables of the environment do not leak into the test."""
    for k in list(os.environ):
        if k.startswith("FAILCORE_"):
            monkeypatch.delenv(k)
    d = tmp_path / ".failcore"
    return d


def executions(effects):
    """How many times each step's body ran: each execution leaves a file `step-NN-<unique>` in `effects`."""
    counts = {}
    for name in os.listdir(effects):
        n = int(name.split("-")[1])
        counts[n] = counts.get(n, 0) + 1
    return counts


def refused_output_is_recorded_failed(store, tool, what):
    """Calls `tool` (no arguments) in a session: its output is refused with a TypeError naming `what`, and
    the call is recorded as failed, so offline there is nothing to serve. Returns the refusal's text."""
    import failcore

    with failcore.session(dir=store) as s:
        with pytest.raises(TypeError, match="output") as e:
            tool()
    assert what in str(e.value)
    _, steps, _ = show(store, s.run_id)
    assert steps[0]["status"] == "failed"
    with failcore.session(dir=store, offline="last"):
        with pytest.raises(failcore.ReplayMiss):
            tool()
    return str(e.value)


def run_script(source, env, timeout=120):
    """Runs a Python program (text) in a fresh interpreter; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, env=env, timeout=timeout
    )
