"""benchmarks/gpu_acceptance.py works (no GPU here): its CPU smoke mode runs the environment, methods (train, checkpoint,
restore, placement), syncs (skipped without CUDA), precision and refusal steps and reports each; a spent budget is a
FAIL and a non-zero exit."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_acceptance.py"


def _run(tmp_path, *args: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "acceptance.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out), *args],
                       capture_output=True, text=True, timeout=timeout)
    return r, (json.loads(out.read_text()) if out.exists() else {})


def test_the_cpu_smoke_mode_runs_each_step_and_reports_it(tmp_path):
    r, doc = _run(tmp_path, "--only", "env,methods,syncs,precision,refusal", "--methods", "supervised")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    status = {s["name"]: s["status"] for s in doc["steps"]}
    assert status == {"env": "PASS", "methods": "PASS", "syncs": "SKIP", "precision": "PASS", "refusal": "PASS"}, r.stdout
    methods = next(s for s in doc["steps"] if s["name"] == "methods")
    assert methods["detail"].startswith("2/2 cases trained, restored and placed on cpu")
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("PASS: 5 of 5 steps")
    assert any(ln.startswith("[5] refusal") and "exit 2" in ln for ln in lines)


def test_a_spent_budget_fails_the_run(tmp_path):
    r, doc = _run(tmp_path, "--only", "env,refusal", "--budget", "0")
    assert r.returncode == 1
    assert [s["status"] for s in doc["steps"]] == ["FAIL", "FAIL"]
    assert "budget" in doc["steps"][0]["detail"]
