"""The built wheel carries the default search spaces and runs `ssl-ray tune` without a source checkout.

This is what a cluster node gets from `pip install "ssl-ray @ git+..."` (clusters/kuberay.yaml): a regular,
non-editable install. The test builds the wheel with pip (about 15 s), installs it into a fresh venv that
reuses the running interpreter's torch and Ray (`venv_seeing_this_environment`: its site-packages added by a
`.pth` file, the wheel `--no-deps`), and runs a one-trial,
one-epoch `ssl-ray tune i2gan` from an empty directory (about 45 s on 2 busy cores). Marked `ray` and
`packaging`; deselect with `-m "not packaging"`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r


def venv_seeing_this_environment(venv: Path) -> Path:
    """A new venv whose Python also sees the packages of the interpreter running the tests; returns its python.

    `python -m venv --system-site-packages` is not enough: run from inside a virtualenv (how most users run the
    tests) it links the *base* interpreter's site-packages, not the outer venv's, so torch and Ray are missing
    there. Instead, a `.pth` file in the new venv adds each of this interpreter's site directories with
    `site.addsitedir` (which also runs their own `.pth` files), after the new venv's own site-packages: what is
    installed into the new venv wins."""
    import site
    import sysconfig

    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    own = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    outer = [p for p in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                                       *site.getsitepackages()]) if Path(p).is_dir()]
    Path(own, "_outer_environment.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in outer) + "\n")
    return py


@pytest.mark.packaging
def test_venv_seeing_this_environment_imports_torch_and_ray(tmp_path):
    """The helper itself: the new venv imports this environment's torch and Ray, and its own packages come
    first (run from a virtualenv, `--system-site-packages` failed this: "No module named 'torch'")."""
    py = venv_seeing_this_environment(tmp_path / "venv")
    out = _run([py, "-c", "import sys, torch, ray; print(torch.__file__); print(sys.prefix)"]).stdout.split()
    import torch

    assert out[0] == torch.__file__ and out[1] == str(tmp_path / "venv"), out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT])
    (whl,) = dist.glob("ssl_ray-*.whl")
    return whl


@pytest.mark.packaging
def test_wheel_lists_every_default_search_space(wheel):
    shipped = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert "i2gan.yaml" in shipped
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("ssl_ray/search_spaces/")) == shipped
    assert not [n for n in names if n.startswith("search_spaces/")]  # not a stray top-level package


@pytest.mark.ray
@pytest.mark.packaging
def test_wheel_installed_in_a_fresh_venv_tunes_from_an_empty_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    py = venv_seeing_this_environment(venv)
    # --ignore-installed: the outer environment's ssl-ray (an editable install) would count as "already satisfied"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel])
    empty = tmp_path / "empty"
    empty.mkdir()
    # no source checkout on the path; the default results root (./ssl_ray_runs), not conftest's
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SSL_RAY_RUNS")}
    env["SSL_RAY_CACHE"] = str(tmp_path / "cache")
    where = _run([venv / "bin" / "python", "-c", "import ssl_ray.tuning.spaces as s; print(s.__file__, s.SPACES_DIR)"],
                 cwd=empty, env=env).stdout.split()
    assert where[0].startswith(str(venv)), where  # the wheel's copy, not an editable install
    assert where[1].startswith(str(venv)) and where[1].endswith("ssl_ray/search_spaces"), where
    r = _run([venv / "bin" / "ssl-ray", "tune", "i2gan", "--num-samples", "1", "--max-epochs", "1",
              "--grace-epochs", "1", "--set", "steps_per_epoch=5", "--quiet", "--json"], cwd=empty, env=env)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["method"] == "i2gan" and summary["num_completed"] == 1 and summary["num_errored"] == 0
    assert Path(summary["experiment"]).is_relative_to(empty / "ssl_ray_runs"), summary["experiment"]
    assert Path(summary["results"]).is_file()

