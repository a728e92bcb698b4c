"""The main job's overhead (issue 29): where a finished search's wall time went, read from its files (no run).

For each experiment folder given (an `ssl-ray tune` search that has finished), printed:

  wall                 the search's wall time as summary.json has it (`seconds`: Tuner.fit with its final sync;
                       Ray's start, `seconds_ray_init`, is printed apart) and Tune's view of it (its controller's
                       start to the last result);
  compute / slots      the sum over every trial-epoch of `epoch_seconds` (the trainer's own time for the epoch:
                       its steps and its evaluation) divided by the slots (trials that can run at once; 2 on the
                       2-core machine the main job ran on), and wall over it (1.0 = nothing but compute);
  fresh / reused       trials whose Ray actor was a new process (a `pid` no earlier trial had) against trials that
                       ran in a process an earlier trial had used (Tune's reuse_actors);
  start-up             per trial: from Tune marking it RUNNING (its actor up) to its first epoch's end, minus
                       that epoch's `epoch_seconds`: building the trainer, data, model, the first step's one-off
                       costs, the report; split fresh / reused;
  the slot-seconds     slots x Tune's wall, split into compute, start-up, the later epochs' overhead (time_this_
                       iter_s - epoch_seconds: checkpoint, report) and the rest (no trial on the slot: actor
                       start for fresh processes, scheduling, the end of the search); of that rest, `head` (the
                       controller's start to the first trial RUNNING: the first actors' processes) and `tail`
                       (the last trial's end minus the end of the one before it: one trial left, a slot idle).

Times come from history.parquet (per epoch: epoch_seconds, time_this_iter_s, time_total_s, pid) and from Tune's
last experiment_state-*.json, read as JSON only (each trial's run_metadata start_time and last_result_time, on
the driver's clock; nothing in it is unpickled). A trial's first epoch ends, on that clock, at last_result_time -
(time_total_s of its last epoch - time_total_s of its first).

    python benchmarks/mainjob_overhead.py /tmp/mainjob_runs/main-seed0 ... [--slots 2] [--json]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
from typing import Any


def tune_times(exp: str) -> tuple[float | None, dict[str, dict[str, float]]]:
    """(the controller's start time, {trial id: {start, last}}) from the newest experiment_state-*.json."""
    files = sorted(glob.glob(os.path.join(exp, "experiment_state-*.json")), key=os.path.getmtime)
    if not files:
        raise SystemExit(f"{exp}: no experiment_state-*.json (Tune's snapshot) to read the trials' start times from")
    with open(files[-1], encoding="utf-8") as f:
        state = json.load(f)
    out = {}
    for trial_json, meta_json in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        if meta.get("start_time") is not None and meta.get("last_result_time") is not None:
            out[trial["trial_id"]] = {"start": float(meta["start_time"]), "last": float(meta["last_result_time"])}
    return (state.get("stats") or {}).get("start_time"), out


def histories(exp: str) -> dict[str, list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(exp, "history.parquet")).to_pylist()
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["trial_id"], []).append(r)
    return {t: sorted(rs, key=lambda r: r["epoch"]) for t, rs in by.items()}


def overhead(exp: str, slots: int) -> dict[str, Any]:
    with open(os.path.join(exp, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    t0, times = tune_times(exp)
    hist = histories(exp)
    trials = sorted((t for t in hist if t in times), key=lambda t: times[t]["start"])
    seen: set[int] = set()
    per = []
    for t in trials:
        rs, tt = hist[t], times[t]
        pid = int(rs[0]["pid"])
        first_end = tt["last"] - (rs[-1]["time_total_s"] - rs[0]["time_total_s"])
        compute = sum(r["epoch_seconds"] for r in rs)
        per.append({"trial": t, "fresh": pid not in seen, "epochs": len(rs), "compute_s": compute,
                    "startup_s": first_end - tt["start"] - rs[0]["epoch_seconds"],
                    "in_trainable_first_s": rs[0]["time_this_iter_s"] - rs[0]["epoch_seconds"],
                    "later_overhead_s": sum(r["time_this_iter_s"] - r["epoch_seconds"] for r in rs[1:]),
                    "span_s": tt["last"] - tt["start"]})
        seen.add(pid)
    compute = sum(p["compute_s"] for p in per)
    tune_wall = max(times[t]["last"] for t in trials) - (t0 if t0 is not None else min(times[t]["start"] for t in trials))
    wall = float(summary["seconds"])
    fresh = [p for p in per if p["fresh"]]
    reused = [p for p in per if not p["fresh"]]
    startup = sum(p["startup_s"] for p in per)
    ends = sorted(times[t]["last"] for t in trials)
    head = min(times[t]["start"] for t in trials) - t0 if t0 is not None else None
    later = sum(p["later_overhead_s"] for p in per)

    def stats(ps: list[dict[str, Any]], k: str) -> dict[str, float] | None:
        v = [p[k] for p in ps]
        return {"n": len(v), "median": statistics.median(v), "min": min(v), "max": max(v), "sum": sum(v)} if v else None

    return {"experiment": exp, "trials": len(per), "epochs": sum(p["epochs"] for p in per), "slots": slots,
            "wall_s": wall, "ray_init_s": summary.get("seconds_ray_init"), "tune_wall_s": tune_wall,
            "compute_s": compute, "compute_over_slots_s": compute / slots, "wall_over_compute": wall / (compute / slots),
            "fresh": len(fresh), "reused": len(reused),
            "startup_fresh": stats(fresh, "startup_s"), "startup_reused": stats(reused, "startup_s"),
            "in_trainable_first_fresh": stats(fresh, "in_trainable_first_s"),
            "in_trainable_first_reused": stats(reused, "in_trainable_first_s"),
            "slot_seconds": {"total": slots * tune_wall, "compute": compute, "startup": startup, "later_epochs": later,
                             "no_trial": slots * tune_wall - sum(p["span_s"] for p in per)},
            "head_s": head, "tail_s": ends[-1] - ends[-2] if len(ends) > 1 else 0.0}


def show(r: dict[str, Any]) -> str:
    def st(s: dict[str, float] | None) -> str:
        return "-" if s is None else f"median {s['median']:.2f} s (min {s['min']:.2f}, max {s['max']:.2f}; sum {s['sum']:.1f})"

    ss = r["slot_seconds"]
    return "\n".join([
        f"{r['experiment']}: {r['trials']} trials, {r['epochs']} trial-epochs, {r['slots']} slots",
        f"  wall {r['wall_s']:.1f} s (Ray start {r['ray_init_s']} s; Tune first start -> last result "
        f"{r['tune_wall_s']:.1f} s) | compute {r['compute_s']:.1f} s / {r['slots']} = {r['compute_over_slots_s']:.1f} s"
        f" | wall / (compute / slots) = {r['wall_over_compute']:.2f}",
        f"  trials in a fresh process {r['fresh']}, in a reused one {r['reused']}",
        f"  start-up (RUNNING -> first epoch's end - its compute): fresh {st(r['startup_fresh'])}; "
        f"reused {st(r['startup_reused'])}",
        f"    of which inside the trainable (first time_this_iter_s - epoch_seconds): fresh "
        f"{st(r['in_trainable_first_fresh'])}; reused {st(r['in_trainable_first_reused'])}",
        f"  slot-seconds {ss['total']:.1f} = compute {ss['compute']:.1f} ({100 * ss['compute'] / ss['total']:.0f} %) + "
        f"start-up {ss['startup']:.1f} ({100 * ss['startup'] / ss['total']:.0f} %) + later epochs' overhead "
        f"{ss['later_epochs']:.1f} ({100 * ss['later_epochs'] / ss['total']:.0f} %) + no trial on the slot "
        f"{ss['no_trial']:.1f} ({100 * ss['no_trial'] / ss['total']:.0f} %)",
        f"    head (Tune's start -> first trial RUNNING) {r['head_s']:.1f} s; tail (one trial left) {r['tail_s']:.1f} s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiments", nargs="+")
    ap.add_argument("--slots", type=int, default=2, help="trials that could run at once (the search's slots)")
    ap.add_argument("--json", action="store_true", help="one JSON line per experiment instead of text")
    a = ap.parse_args()
    for exp in a.experiments:
        r = overhead(exp, a.slots)
        print(json.dumps(r) if a.json else show(r))


if __name__ == "__main__":
    main()
