import json
import subprocess
import sys

from conftest import clean_env, cli, failcore_command


def test_the_sample_runs_from_the_installed_command(tmp_path):
    store = tmp_path / ".failcore"
    p = subprocess.run(
        failcore_command() + ["sample", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(FAILCORE_DIR=store),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["schema"] == "failcore.sample/1"
    # Run 1 died at step 9; run 2 resumed it: steps served from the trace, the rest executed. Run 3
    # replayed run 2 offline and strictly: nothing executed.
    assert summary["first_run"] and summary["replayed"] >= 1 and summary["executed"] >= 1
    assert summary["offline_replayed"] >= 1 and summary["offline_executed"] == 0
    runs = json.loads(cli(store, "list", "--json").stdout)["runs"]
    assert len(runs) == 3
    assert runs[0]["run"] == summary["offline_run"]
    assert runs[1]["run"] == summary["run"]
    assert runs[1]["resumed_from"] == runs[2]["run"] == summary["first_run"]
    assert cli(store, "verify", summary["run"]).returncode == 0
    shown = cli(store, "show", summary["run"]).stdout
    assert summary["run"] in shown and "replayed" in shown


def test_exit_status_and_errors_are_the_binarys(tmp_path):
    p = cli(tmp_path / "missing", "show", "--last", check=False)
    assert p.returncode == 2
    assert p.stderr.startswith("failcore: ")
    p = subprocess.run(failcore_command() + ["--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("failcore ")
    p = subprocess.run([sys.executable, "-m", "failcore", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "sample" in p.stdout and "llm-proxy" in p.stdout
