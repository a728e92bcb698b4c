"""`ssl-ray tune`'s progress line (tuning/progress.py): the pure formatting, the Tune callback on a real local Ray
instance with ASHA stopping trials, and --dry-run's rough time from a measured epoch."""
import io
import json

import numpy as np
import pytest

from ssl_ray.tuning import progress as P


def test_the_line_reads_the_snapshot():
    s = P.Snapshot(trials=8, max_epochs=9, done=3, stopped=1, errored=0, running=2, epochs=14, left=17.0,
                   basis="ASHA: ~3.5/8 past 1", elapsed=125.0, best=12.3449)
    assert P.progress_line(s) == ("[tune 2m05s] trials 3/8 done (1 stopped early, 0 errored), 2 running | epochs "
                                  "14/~31 (ASHA: ~3.5/8 past 1) | ETA ~2m32s | best val 12.34%")  # 125 x 17 / 14
    s.epochs, s.best, s.elapsed = 0, None, 3.0
    assert P.progress_line(s).endswith("| epochs 0/~17 (ASHA: ~3.5/8 past 1) | ETA ? | best val -")
    s = P.Snapshot(trials=2, max_epochs=4, done=1, running=1, epochs=6, left=2.0, elapsed=60.0)  # FIFO: exact
    assert P.eta(s) == pytest.approx(60.0 * 2 / 6) and "| epochs 6/8 | ETA ~20s" in P.progress_line(s)
    s = P.Snapshot(trials=2, max_epochs=5, done=2, epochs=4, left=3.0, basis="x", elapsed=8.0)
    assert P.eta(s) == 0.0  # all done: nothing left whatever the estimate said
    assert [P.duration(x) for x in (0.4, 59.6, 61, 3725)] == ["0s", "1m00s", "1m01s", "1h02m"]
    s = P.Snapshot(trials=2, max_epochs=3, running=2, epochs=2, left=4.0, elapsed=5.0, what="confirm")
    assert P.progress_line(s).startswith("[confirm 5s] trials 0/2 done (0 stopped early, 0 errored), 2 running | "
                                         "epochs 2/6 | ETA ~10s")


def test_the_passing_chance_is_rays_cutoff_on_alike_trials():
    """passing(k) against a Monte Carlo of Ray's ASHA cutoff (the (1 - 1/rf) percentile of the k recorded, a
    new value below it stops): within 0.015 for k = 0..6, rf 2 and 3."""
    rng = np.random.default_rng(0)
    for rf in (2, 3):
        for k in range(7):
            n = 20000
            recorded, new = rng.random((n, max(k, 1))), rng.random(n)
            cut = np.percentile(recorded, (1 - 1 / rf) * 100, axis=1)
            observed = 1.0 if k == 0 else float(np.mean(new >= cut))
            assert abs(observed - P.passing(k, rf)) < 0.015, (rf, k, observed, P.passing(k, rf))
    assert P.passing(0, 3) == 1.0 and P.passing(1, 3) == 0.5 and abs(P.passing(10_000, 3) - 1 / 3) < 1e-3


def test_expect_by_hand():
    r = P.Rungs(at=[5, 15], rf=3, label="ASHA")
    # nothing run yet: 9 x 5, then 4.28 of 9 past 5 (1 + 1/2 + 4/9 + 5/12 + ...), then 2.48 of those past 15
    past5 = sum(P.passing(k, 3) for k in range(9))
    past15 = sum(P.passing(k, 3) for k in range(4)) + (past5 - 4) * P.passing(4, 3)
    left, basis = P.expect(9, [], 45, r)
    assert past5 == pytest.approx(4.2763, abs=1e-4) and left == pytest.approx(45 + 10 * past5 + 30 * past15)
    assert basis == "ASHA: ~4.3/9 past 5, ~2.5/4.3 past 15" and left > 105 * 1.4  # the nominal budget: 105
    # 4 of 9 seen: one stopped at 5, one at 15, one running at 15 (kept there), one at 7
    seen = [("TERMINATED", 5), ("RUNNING", 15), ("TERMINATED", 15), ("RUNNING", 7)]
    left, basis = P.expect(9, seen, 45, r)
    at5 = sum(P.passing(4 + j, 3) for j in range(5))         # 5 trials still to reach 5, 4 recorded there
    arrive15 = 1 + at5                                      # the one at 7, and those
    whole = int(arrive15)
    at15 = sum(P.passing(2 + j, 3) for j in range(whole)) + (arrive15 - whole) * P.passing(2 + whole, 3)
    assert left == pytest.approx(30 + 8 + 5 * 5 + 10 * at5 + 30 * at15)
    assert basis == f"ASHA: ~{3 + at5:.1f}/9 past 5, ~{1 + at15:.1f}/{2 + arrive15:.1f} past 15"
    assert P.expect(3, [("TERMINATED", 45), ("ERROR", 2), ("TERMINATED", 5)], 45, r) == (0.0, "")
    fifo = P.Rungs()
    assert P.expect(3, [("RUNNING", 4), ("TERMINATED", 10)], 10, fifo) == (6 + 10, "")  # exact, no basis
    sha = P.Rungs(at=[5, 15], rf=3, label="SHA", synchronous=True)
    assert P.expect(9, [], 45, sha)[0] == 9 * 5 + 3 * 10 + 1 * 30  # SHA keeps ceil(n/3): its nominal, exact
    paused = [("PAUSED", 5)] * 4 + [("RUNNING", 3)] * 5  # SHA: paused at the rung, undecided
    assert P.expect(9, paused, 45, sha)[0] == 5 * 2 + 3 * 10 + 1 * 30
    bohb = P.Rungs(label="BOHB", bounded=True)
    assert P.expect(2, [], 9, bohb) == (18, "at most: BOHB stops trials at epochs not known ahead")


def _asha_run(values, slots, rungs, max_epochs, rf):
    """Ray's ASHA rule (async_hyperband._Bracket.on_result, mode min: the value negated, stopped below the (1 -
    1/rf) percentile of those recorded at the rung) on trials of fixed quality `values`, started in order, `slots`
    at a time, one epoch per tick. Yields (epochs run, [(status, epochs) of the trials started]) each tick."""
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    state: dict[int, tuple[str, int]] = {}
    queue = list(range(len(values)))
    while queue or any(st == "RUNNING" for st, _ in state.values()):
        while queue and sum(st == "RUNNING" for st, _ in state.values()) < slots:
            state[queue.pop(0)] = ("RUNNING", 0)
        for i, (st, e) in list(state.items()):
            if st != "RUNNING":
                continue
            e += 1
            st = "TERMINATED" if e >= max_epochs else st
            if e in recorded:
                got = recorded[e]
                if got and -values[i] < np.percentile(got, (1 - 1 / rf) * 100):
                    st = "TERMINATED"
                got.append(-values[i])
            state[i] = (st, e)
        yield sum(e for _, e in state.values()), [state[i] for i in sorted(state)]


def test_the_estimate_is_honest_halfway_through_simulated_asha_runs():
    """The issue's case: the main job's plan (9 trials, rungs 5/15, max 45, 2 at once) nominally runs 105 epochs,
    but ASHA keeps more. Halfway through each of 200 simulated runs (Ray's rule on random trials), the line's total
    (epochs run + expected left) is within 10 % of the run's true total on average; the old denominator,
    max(nominal, run), was about 0.63 of it."""
    rng = np.random.default_rng(1)
    r = P.Rungs(at=[5, 15], rf=3, label="ASHA")
    ours, old = [], []
    for _ in range(200):
        ticks = list(_asha_run(rng.random(9), 2, [5, 15], 45, 3))
        total = ticks[-1][0]
        run, seen = next(t for t in ticks if t[0] >= total / 2)
        ours.append((run + P.expect(9, seen, 45, r)[0]) / total)
        old.append(max(105, run) / total)
        assert P.expect(9, ticks[-1][1], 45, r)[0] == 0.0
    assert 0.9 < np.mean(ours) < 1.1 and 0.8 < np.median(ours) < 1.2, (np.mean(ours), np.median(ours))
    assert np.mean(old) < 0.75  # what the line said before: low all along


def test_the_heartbeat_interval():
    import os
    import subprocess
    import sys

    code = ("from ssl_ray.tuning import progress as P; print(P.interval_s(False), P.interval_s(True), "
            "P.progress_callback(1, 1, quiet=True).every)")
    env = {k: v for k, v in os.environ.items() if k != P.INTERVAL_ENV}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.split() == ["15.0", "50.0", "50.0"]
    got = subprocess.run([sys.executable, "-c", code], env={**env, P.INTERVAL_ENV: "1.5"}, capture_output=True,
                         text=True, check=True)
    assert got.stdout.split() == ["1.5", "1.5", "1.5"]
    got = subprocess.run([sys.executable, "-c", code], env={**env, P.INTERVAL_ENV: "-3"}, capture_output=True,
                         text=True, check=True)
    assert got.stdout.split() == ["15.0", "50.0", "50.0"] and "ignored" in got.stderr


@pytest.mark.ray
def test_the_callback_counts_a_real_asha_search(ray_local):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def trainable(config):
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "val_error": config["base"] - epoch})

    out = io.StringIO()
    cb = P.progress_callback(4, 4, P.Rungs(at=[1, 2], rf=2, label="ASHA"), stream=out, interval=0.0)
    tuner = tune.Tuner(trainable, param_space={"base": tune.grid_search([20.0, 30.0, 40.0, 50.0])},
                       tune_config=tune.TuneConfig(metric="val_error", mode="min", max_concurrent_trials=1,
                                                   scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1,
                                                                           reduction_factor=2)),
                       run_config=tune.RunConfig(callbacks=[cb], verbose=0, storage_path=str(ray_local_tmp())))
    results = tuner.fit()
    epochs = sorted(r.metrics["epoch"] for r in results)
    stopped = sum(e < 4 for e in epochs)
    assert stopped >= 1 and epochs[0] == 1  # ASHA stopped the worse trials at its first rung
    last = out.getvalue().strip().splitlines()[-1]
    assert last == cb.lines[-1]
    assert (f"trials 4/4 done ({stopped} stopped early, 0 errored), 0 running | epochs {sum(epochs)}/"
            f"{sum(epochs)} | ETA ~0s | best val 16.00%") in last
    assert len(cb.lines) >= 3  # interval 0: a line at each loop turn too, not only at the end
    seen = [int(line.split("epochs ")[1].split("/")[0]) for line in cb.lines]
    assert seen == sorted(seen)  # epochs only grow
    first = cb.lines[0].split("epochs ")[1].split(" |")[0]  # before any decision: ASHA's rule on 4 trials
    assert first.startswith("0/~10 (ASHA: ~2.5/4 past 1, ~1.8/2.5 past 2)") or not first.startswith("0/"), first


def ray_local_tmp():
    import tempfile

    return tempfile.mkdtemp(prefix="h10_progress_")


def test_dry_run_estimate_uses_the_newest_measured_experiment(tmp_path):
    from ssl_ray.tuning import results as R

    p = {"method": "supervised", "dataset": "digits", "trials": 4, "max_epochs": 5, "scheduler": "fifo",
         "rungs": [], "reduction_factor": None, "epochs_nominal": 20.0}
    assert P.dry_run_estimate(p, str(tmp_path), 2).startswith("rough time: unknown (no finished supervised search")
    exp = tmp_path / "a"
    R.write_tables(str(exp), [{"trial_id": "t"}], [{"trial_id": "t", "epoch": e, "epoch_seconds": s}
                                                   for e, s in ((1, 3.0), (2, 1.0), (3, 2.0))])
    (exp / "summary.json").write_text(json.dumps({"method": "supervised", "dataset": "digits"}))
    other = tmp_path / "b"  # another method: not used
    R.write_tables(str(other), [{"trial_id": "t"}], [{"trial_id": "t", "epoch": 1, "epoch_seconds": 100.0}])
    (other / "summary.json").write_text(json.dumps({"method": "vat", "dataset": "digits"}))
    assert P.measured_epoch_seconds(str(tmp_path), "supervised", "digits") == (2.0, str(exp))
    line = P.dry_run_estimate(p, str(tmp_path), 2)
    assert line.startswith("rough time: ~20s (20 epochs expected x 2.00 s per epoch, measured in a, / 2 trial(s) at "
                           "once")
    asha = {**p, "trials": 9, "max_epochs": 45, "scheduler": "asha", "rungs": [5, 15], "reduction_factor": 3}
    line = P.dry_run_estimate(asha, str(tmp_path), 1)  # ASHA's rule: ~162 epochs, not the nominal 105
    assert line.startswith("rough time: ~5m24s (162 epochs expected (ASHA: ~4.3/9 past 5, ~2.5/4.3 past 15) x 2.00 s")
    assert P.dry_run_estimate(p, "s3://bucket/x", 2).startswith("rough time: unknown")
