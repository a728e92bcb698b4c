#!/usr/bin/env bash
# End-to-end check of the cluster launcher on ONE machine:
#   bash clusters/smoke.sh
# `ray up clusters/smoke.yaml` (Ray's `local` provider: head 127.0.0.1, worker 127.0.0.2, both over SSH to an
# sshd started here with a key made for the check; file mounts; setup commands installing the wheel built
# from this checkout), `ray job submit -- ssl-ray tune i2gan --address auto` with a tiny budget, the results
# read back with `ray rsync-down` and checked (the trial ran on the worker), `ray down`. Exits 0 only if all
# of that happened, and prints where the results are.
#
# Isolation: `ray stop` and `ray down` end every Ray process they can see. Everything after the wheel build
# runs in new PID, network and mount namespaces (unshare; needs root): its own process table (checked
# below with ps), its own loopback network (ports 22, 6379, 8265 free, nothing reachable outside), a private
# /tmp/ray and a private home directory. Other Ray instances on the machine are invisible to it, and when the
# script ends the kernel ends whatever it left. The worker "node" has a PID namespace of its own too, so its
# `ray stop` cannot touch the head's processes. If namespaces cannot be made, it refuses to run.
# Needs: root, unshare/mount/ip (util-linux, iproute2), openssh-server and rsync (installed with apt-get when
# missing), the project's Python with ray[default] and torch. Takes 2-5 minutes on a busy 2-core machine.
# From a virtualenv too: `python -m venv --system-site-packages V && . V/bin/activate && pip install --no-deps -e .
# && bash clusters/smoke.sh` (2026-12-02, 2-core machine at load 1-2: SMOKE OK, ray up to ray down in 70 s; the
# job's GPU default was 0: a local-provider cluster with all its worker_ips up cannot grow, cluster.launcher_full).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--inside" ]; then
  [ "$(id -u)" = 0 ] || { echo "smoke.sh: needs root (namespaces, sshd)" >&2; exit 2; }
  missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v rsync >/dev/null || missing+=(rsync)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! unshare --fork --pid --mount-proc --net true; then
    echo "smoke.sh: cannot create PID/network/mount namespaces here; refusing to run ray up/down on a shared machine" >&2
    exit 2
  fi
  SMOKE=$(mktemp -d /tmp/ssl-ray-smoke.XXXXXX)
  echo "== building the wheel (pip wheel --no-deps) into build/smoke-wheel; work folder $SMOKE"
  rm -rf build/smoke-wheel
  python3 -m pip wheel --no-deps -q -w build/smoke-wheel . > "$SMOKE/wheel.log" 2>&1 || { cat "$SMOKE/wheel.log"; exit 1; }
  exec unshare --fork --pid --mount-proc --net bash "$0" --inside "$SMOKE"
fi

# ------------------------------------------------------------------ inside the namespaces (this bash is PID 1)
SMOKE=$2
CONFIG=clusters/smoke.yaml
trap 'exit 143' TERM  # PID 1 of a namespace ignores signals it does not handle
ip link set lo up
[ "$$" = 1 ] || { echo "smoke.sh: not PID 1 of a new PID namespace" >&2; exit 2; }
visible=$(ps -e --no-headers | wc -l)
echo "== isolated: this namespace sees $visible processes (ps -e), none of the host's"
if ps -e -o comm= | grep -Eq '^(raylet|gcs_server)$'; then
  echo "smoke.sh: a Ray process is visible inside the namespace; stopping" >&2; exit 2
fi

# A private /tmp/ray (Ray's session folders and the local provider's state) and a private home directory
# (~/.ray, ~/.ssh, ~/ray_bootstrap_*), with the host's Python mounted back into it when it lives there.
PY=$(python3 -c 'import sys; print(sys.executable)')
mkdir -p /tmp/ray "$SMOKE/tmp-ray" "$SMOKE/home/.ssh" /run/sshd
mount --bind "$SMOKE/tmp-ray" /tmp/ray
# The base interpreter and, when smoke.sh runs inside a virtualenv, that venv too
for PREFIX in $(python3 -c 'import sys; print(sys.base_prefix); print(sys.prefix)' | sort -u); do
  case "$PREFIX/" in
    "$HOME"/*) top="${PREFIX#"$HOME"/}"; top="${top%%/*}"
               if [ ! -d "$SMOKE/home/$top" ]; then mkdir -p "$SMOKE/home/$top"; mount --bind "$HOME/$top" "$SMOKE/home/$top"; fi ;;
  esac
done
mount --rbind "$SMOKE/home" "$HOME"
# What each node's venv adds to its path (smoke.yaml's setup_commands): this Python's site directories, with
# their own .pth files (site.addsitedir), after the venv's own site-packages, so the wheel installed there wins.
python3 -c '
import site, sysconfig
dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])
print("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs))' > "$HOME/ssl-ray-outer-site.pth"

# The key made for the check, and an sshd per node address (the worker's in a PID namespace of its own).
ssh-keygen -q -t ed25519 -N '' -f "$HOME/.ssh/ssl_ray_smoke_key"
cp "$HOME/.ssh/ssl_ray_smoke_key.pub" "$HOME/.ssh/authorized_keys"
ssh-keygen -q -t ed25519 -N '' -f "$SMOKE/ssh_host_key"
for ip in 127.0.0.1 127.0.0.2; do
  cat > "$SMOKE/sshd-$ip.conf" <<EOF
ListenAddress $ip
Port 22
HostKey $SMOKE/ssh_host_key
PidFile $SMOKE/sshd-$ip.pid
AuthorizedKeysFile $HOME/.ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
EOF
done
/usr/sbin/sshd -f "$SMOKE/sshd-127.0.0.1.conf" -E "$SMOKE/sshd-head.log"
unshare --fork --pid --mount-proc /usr/sbin/sshd -D -f "$SMOKE/sshd-127.0.0.2.conf" -E "$SMOKE/sshd-worker.log" &
WORKER_SSHD=$!
# Every SSH command `ray up` runs sources ~/.bashrc: the host's Python first on PATH, the node's address
# (the one the SSH client connected to) and the node's venv once the setup commands made it.
cat > "$HOME/.bashrc" <<EOF
export PATH="$(dirname "$PY"):\$PATH"
export SMOKE_NODE_IP=\$(echo "\$SSH_CONNECTION" | cut -d' ' -f3)
[ -n "\$SMOKE_NODE_IP" ] && [ -f ~/venv-\$SMOKE_NODE_IP/bin/activate ] && . ~/venv-\$SMOKE_NODE_IP/bin/activate
true
EOF
for i in $(seq 50); do
  ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -i "$HOME/.ssh/ssl_ray_smoke_key" root@127.0.0.2 true 2>/dev/null && break
  sleep 0.2
done

step() { echo "== $(date +%H:%M:%S) $*"; }
# Ray 2.60's default autoscaler (v2) started the head but, in 4 minutes of a run on a loaded 2-core machine,
# never launched the local provider's worker (no error logged); the v1 autoscaler does. `ray up` reads this.
export RAY_UP_enable_autoscaler_v2=0
# Up to 3 tries: on a loaded machine the head's raylet may give up waiting for its agent (smoke.yaml);
# `ray up` again re-runs the setup and restarts Ray on the head.
for try in 1 2 3; do
  step "ray up $CONFIG (try $try)"
  if ray up -y --no-config-cache "$CONFIG" > "$SMOKE/ray-up-$try.log" 2>&1; then up=1; break; fi
  up=0; grep -h "Timed out waiting for file\|Failed to setup head" "$SMOKE/ray-up-$try.log" | tail -2 | cut -c1-200
done
[ "$up" = 1 ] || { tail -40 "$SMOKE/ray-up-3.log"; exit 1; }

step "waiting for the worker (127.0.0.2, 2 CPUs) to join"
joined=0
for i in $(seq 60); do
  if ray exec --no-config-cache "$CONFIG" "ray status" > "$SMOKE/ray-status.log" 2>&1 && grep -q "/2.0 CPU" "$SMOKE/ray-status.log"; then
    joined=1; break
  fi
  sleep 5
done
[ $joined = 1 ] || { echo "the worker never joined:"; tail -30 "$SMOKE/ray-status.log"; tail -40 /tmp/ray/session_latest/logs/monitor.* 2>/dev/null; exit 1; }

step "ray job submit -- ssl-ray tune i2gan --address auto (1 trial, 1 epoch)"
ray job submit --address http://127.0.0.1:8265 -- ssl-ray tune i2gan --address auto --storage "$HOME/smoke-results" \
    --name smoke --num-samples 1 --max-epochs 1 --grace-epochs 1 --set steps_per_epoch=5 --quiet --json \
    > "$SMOKE/job.log" 2>&1 || { tail -40 "$SMOKE/job.log"; exit 1; }

step "reading the results back (ray rsync-down)"
mkdir -p "$SMOKE/results"
ray rsync-down "$CONFIG" "$HOME/smoke-results/smoke/" "$SMOKE/results/" > "$SMOKE/rsync.log" 2>&1 \
  || { tail -20 "$SMOKE/rsync.log"; exit 1; }
python3 - "$SMOKE/results" "$SMOKE/job.log" <<'EOF'
import glob, json, os, sys
import pyarrow.parquet as pq
results, job_log = sys.argv[1], sys.argv[2]
summary = [json.loads(line) for line in open(job_log) if line.startswith('{"experiment"')]
assert summary, "the job printed no JSON summary"
s = summary[-1]
assert s["method"] == "i2gan" and s["num_completed"] == 1 and s["num_errored"] == 0, s
rows = pq.read_table(os.path.join(results, "results.parquet")).to_pylist()
assert len(rows) == 1, rows
trials = glob.glob(os.path.join(results, "*", "result.json"))
assert trials, "no trial folder came back"
nodes = {json.loads(line)["node_ip"] for t in trials for line in open(t) if line.strip()}
assert nodes == {"127.0.0.2"}, f"the trial ran on {nodes}, not on the worker"
print(f"   1 trial on the worker {nodes.pop()}: val error {s['best']['val_error']:.2f}%, "
      f"test error {s['best']['test_error']:.2f}% (tiny budget)")
EOF

step "ray down $CONFIG"
ray down -y "$CONFIG" > "$SMOKE/ray-down.log" 2>&1 || { tail -20 "$SMOKE/ray-down.log"; exit 1; }
sleep 2
if ps -e -o comm= | grep -Eq '^(raylet|gcs_server)$'; then
  echo "Ray processes are still running after ray down:"; ps -e -o pid,comm; exit 1
fi
kill "$(cat "$SMOKE/sshd-127.0.0.1.pid")" "$WORKER_SSHD" 2>/dev/null || true
echo "SMOKE OK: ray up, job, results read back, ray down"
echo "results: $SMOKE/results (results.parquet, history.parquet, trial folders); logs: $SMOKE/*.log"
