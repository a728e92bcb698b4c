"""`ssl-ray compare` for real: two methods on digits, one trial each, 2 epochs, 2 confirmation seeds, through
the CLI (a local Ray instance, run_tune per method); the table must match what each experiment recorded, and
--quiet still prints the progress line's heartbeat."""
import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from ssl_ray.tuning import progress as P
from ssl_ray.tuning.compare import row, to_markdown

pytestmark = pytest.mark.ray


def _seconds(line: str) -> int:
    """The elapsed time a progress line starts with: [tune 42s], [tune 1m05s], [tune 1h02m]."""
    h, m, sec = re.match(r"\[tune (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\]", line).groups()
    return 3600 * int(h or 0) + 60 * int(m or 0) + int(sec or 0)


def _run_timed(args, env, timeout):
    """Run a command; (exit code, stdout, [(seconds since start, stderr line)]): each stderr line with the time it
    arrived, as a terminal would show it (one reader per pipe: communicate() would read stderr too)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[tuple[float, str]] = []
    out: list[str] = []
    readers = [threading.Thread(target=lambda: lines.extend((time.monotonic() - t0, x.rstrip("\n"))
                                                            for x in proc.stderr), daemon=True),
               threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
    for r in readers:
        r.join(10)
    return proc.returncode, "".join(out), lines


def test_compare_two_methods_for_real(tmp_path):
    """Also compare --quiet's heartbeat (issue 28): the search's progress line with --quiet, its interval set to
    1 s by SSL_RAY_TUNE_PROGRESS_SECONDS (the default is 50 s): a first line when each search starts, then one
    about every second (no more often), each method's search having its own."""
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache"), P.INTERVAL_ENV: "1"}
    args = [sys.executable, "-m", "ssl_ray.cli", "compare", "supervised", "pseudolabel", "--dataset", "digits",
            "--labels", "30", "--num-samples", "1", "--max-epochs", "2", "--grace-epochs", "1", "--seeds", "2",
            "--storage", str(tmp_path / "runs"), "--name", "cmp", "--quiet", "--format", "csv",
            "--output", str(tmp_path / "table.csv")]
    code, _, timed = _run_timed(args, env, 900)
    stderr = "\n".join(line for _, line in timed)
    assert code == 0, stderr[-3000:]
    beats = [(t, line) for t, line in timed if line.startswith("[tune ")]
    ends = [i for i, (_, line) in enumerate(beats) if "trials 1/1 done" in line]
    assert len(ends) >= 2, stderr[-3000:]  # each search ends with its line (trials 1/1 done)
    searches = [beats[:ends[0] + 1], beats[ends[0] + 1:ends[-1] + 1]]
    for search in searches:
        assert len(search) >= 3, search  # its first line, at least one heartbeat, its last
        stamps = [_seconds(line) for _, line in search]
        assert stamps == sorted(stamps), search
        gaps = [b[0] - a[0] for a, b in zip(search, search[1:])]
        assert max(gaps) < 6.0, gaps  # a line at least every few seconds at a 1 s interval
        assert len(search) <= stamps[-1] + 3, search  # ... and not at every turn of Tune's loop
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert [x["method"] for x in rows] == ["supervised", "pseudolabel"]
    folder = tmp_path / "runs" / "cmp"
    assert (folder / "compare.md").exists() and (folder / "compare.csv").exists()
    md = (folder / "compare.md").read_text()
    assert "| supervised |" in md and "| pseudolabel |" in md and "+-" in md
    for x in rows:
        # each method's row is its experiment's own confirmation: 2 seeds, mean and std of their test errors
        summary = json.loads((tmp_path / "runs" / f"cmp-{x['method']}" / "summary.json").read_text())
        assert summary["num_trials"] == 1 and summary["scheduler"]["max_epochs"] == 2
        assert summary["dataset"] == "digits" and summary["labels"] == 30
        errs = summary["confirm"]["test_errors"]
        assert len(errs) == 2 and summary["confirm"]["seeds"] == [1, 2]
        assert all(0.0 <= e <= 100.0 for e in errs)
        assert float(x["test_error_mean"]) == pytest.approx(sum(errs) / 2)
        assert float(x["test_error_std"]) == pytest.approx(abs(errs[0] - errs[1]) / 2 ** 0.5)
        assert int(x["seeds"]) == 2 and int(x["trials"]) == 1
        assert 0.0 <= float(x["best_val_error"]) <= 100.0


def test_table_from_summaries():
    s = {"num_trials": 3, "searched": ["lr"], "experiment": "/x",
         "best": {"val_error": 10.0, "config": {"lr": 0.001234567}},
         "confirm": {"test_errors": [10.0, 14.0], "seeds": [1, 2]}}
    r = row("fixmatch", s)
    assert r["test_error_mean"] == 12.0 and r["test_error_std"] == pytest.approx(2 ** 1.5)
    assert r["best_config"] == "lr=0.001235"
    md = to_markdown({"dataset": "digits", "labels": 50, "num_samples": 3, "max_epochs": 4, "seeds": 2, "rows": [r]})
    assert "| fixmatch | 12.00 +- 2.83 | 2 | 10.00 | 3 | lr=0.001235 |" in md
    empty = row("vat", {"num_trials": 1, "searched": []})
    assert empty["test_error_mean"] is None and "| vat | - |" in to_markdown(
        {"dataset": "d", "labels": 1, "num_samples": 1, "max_epochs": 1, "seeds": 1, "rows": [empty]})
