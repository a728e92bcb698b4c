"""`ssl-ray compare` for real: two methods on digits, one trial each, 2 epochs, 2 confirmation seeds, through
the CLI (a local Ray instance, run_tune per method); the table must match what each experiment recorded."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from ssl_ray.tuning.compare import row, to_markdown

pytestmark = pytest.mark.ray


def test_compare_two_methods_for_real(tmp_path):
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "ssl_ray.cli", "compare", "supervised", "pseudolabel", "--dataset", "digits",
            "--labels", "30", "--num-samples", "1", "--max-epochs", "2", "--grace-epochs", "1", "--seeds", "2",
            "--storage", str(tmp_path / "runs"), "--name", "cmp", "--quiet", "--format", "csv",
            "--output", str(tmp_path / "table.csv")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
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
