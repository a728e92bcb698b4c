"""The type checker passes on the whole package (mypy, configured in mypy.ini at the repository root)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_passes_on_ssl_ray():
    r = subprocess.run([sys.executable, "-m", "mypy", "ssl_ray"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"mypy found errors:\n{r.stdout}\n{r.stderr}"


def test_no_type_ignore_in_methods():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "ssl_ray" / "methods").glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if "type: ignore" in line]
    assert not found, f"`# type: ignore` in methods/ (type the config instead: Method[MyConfig]): {found}"
