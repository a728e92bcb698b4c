"""How `ssl-ray tune` starts Ray: the pre-flight build runs while the local instance starts (a config error still
comes first and alone), and the local instance starts no idle worker processes that no trial would use, nor a
dashboard process nothing uses."""
import json
import subprocess
import sys
import threading

import pytest

from ssl_ray.errors import SSLRayError
from ssl_ray.tuning.tune import preflight_while_ray_starts


def test_preflight_runs_while_ray_starts():
    started, checked = threading.Event(), threading.Event()

    def check():  # would time out if the two ran one after the other
        assert started.wait(30), "the pre-flight check did not run while Ray started"
        checked.set()

    def start():
        started.set()
        assert checked.wait(30), "Ray's start did not run while the pre-flight check ran"

    seconds = preflight_while_ray_starts(check, start)
    assert checked.is_set() and 0 <= seconds < 30


def test_a_preflight_error_comes_first_and_alone():
    ran = []

    def bad_check():
        raise SSLRayError("gamma: 1 > 0 needs labelled points")

    with pytest.raises(SSLRayError, match="gamma"):
        preflight_while_ray_starts(bad_check, lambda: ran.append("start"))
    assert ran == ["start"]

    def bad_start():
        raise SSLRayError("cannot reach a Ray cluster")

    with pytest.raises(SSLRayError, match="gamma"):  # both failed: the configuration's error explains more
        preflight_while_ray_starts(bad_check, bad_start)
    with pytest.raises(SSLRayError, match="cannot reach"):  # only the start failed
        preflight_while_ray_starts(lambda: None, bad_start)


SCRIPT = """
import json, os, time
import ray
import psutil
from ssl_ray.tuning.cluster import init_ray
from ssl_ray.tuning.ray_internals import PRESTART_ENV
init_ray(None, num_cpus=2, dashboard=False)
time.sleep(2)
children = psutil.Process().children(recursive=True)
names = [p.name() for p in children]
cmds = [" ".join(p.cmdline()) for p in children]
from ray._private import node
restored = node.Node.start_api_server.__qualname__ == "Node.start_api_server"
ray.shutdown()
print(json.dumps({"idle": sum(n.startswith("ray::IDLE") for n in names), "names": names,
                  "dashboard": [c for c in cmds if "dashboard/dashboard.py" in c],
                  "agent": any("dashboard/agent.py" in c for c in cmds),
                  "env_left": PRESTART_ENV in os.environ, "restored": restored}))
"""


def test_local_instance_starts_no_idle_worker_processes_and_no_dashboard_process():
    """Ray starts one idle worker per CPU for the first driver; Tune's and Train's actors carry their own
    runtime_env and never use them, so they only took CPU while Ray started (BENCHMARKS.md, section 2). Without
    the dashboard, Ray still starts a dashboard process serving usage statistics only and waits for it
    (ray_internals.no_api_server): not started either, the step put back after."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("raylet" in n for n in r["names"]), r  # the instance did start, and was looked at
    assert r["idle"] == 0, r
    assert r["env_left"] is False  # the switch was for that raylet only
    assert r["dashboard"] == [], r
    assert r["agent"] is True, r  # the raylet's own agent (metrics, runtime envs) is not the dashboard process
    assert r["restored"] is True


def test_a_preflight_error_of_tune_is_one_line_on_the_real_terminal(tmp_path):
    """CliRunner does not see what Ray's loggers write to the process's stderr: run the real command. Ray now
    starts while the pre-flight check runs, and its token-authentication warning would come before the error."""
    out = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "entropy", "--dataset", "circles",
                          "--labels", "8", "--set", "gamma=1.0", "--storage", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith("error: gamma: 1 > 0 needs class activation maps"), lines
