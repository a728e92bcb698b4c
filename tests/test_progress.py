"""`ssl-ray tune`'s progress line (tuning/progress.py): the pure formatting, the Tune callback on a real local Ray
instance with ASHA stopping trials, and --dry-run's rough time from a measured epoch."""
import io
import json

import pytest

from ssl_ray.tuning import progress as P


def test_the_line_reads_the_snapshot():
    s = P.Snapshot(trials=8, epochs_planned=31, max_epochs=9, done=3, stopped=1, errored=0, running=2, epochs=14,
                   running_left=10, elapsed=125.0, best=12.3449)
    assert P.progress_line(s) == ("[tune 2m05s] trials 3/8 done (1 stopped early, 0 errored), 2 running | epochs "
                                  "14/31 | ETA ~2m32s | best val 12.34%")  # 125 x 17 / 14 = 151.8 s
    s.epochs, s.best, s.elapsed = 0, None, 3.0
    assert P.progress_line(s).endswith("| epochs 0/31 | ETA ? | best val -")
    s = P.Snapshot(trials=2, epochs_planned=4, max_epochs=4, done=1, running=1, epochs=6, running_left=2,
                   elapsed=60.0)  # ASHA kept more than nominal: the running trials' epochs still count
    assert P.eta(s) == pytest.approx(60.0 * 2 / 6) and "epochs 6/6" in P.progress_line(s)
    s = P.Snapshot(trials=2, epochs_planned=10, max_epochs=5, done=2, epochs=4, elapsed=8.0)
    assert P.eta(s) == 0.0  # all done: nothing left even below the nominal budget
    assert [P.duration(x) for x in (0.4, 59.6, 61, 3725)] == ["0s", "1m00s", "1m01s", "1h02m"]


@pytest.mark.ray
def test_the_callback_counts_a_real_asha_search(ray_local):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def trainable(config):
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "val_error": config["base"] - epoch})

    out = io.StringIO()
    cb = P.progress_callback(4, 7.0, 4, stream=out, interval=0.0)
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
            f"{max(7, sum(epochs))} | ETA ~0s | best val 16.00%") in last
    assert len(cb.lines) >= 3  # interval 0: a line at each loop turn too, not only at the end
    seen = [int(line.split("epochs ")[1].split("/")[0]) for line in cb.lines]
    assert seen == sorted(seen)  # epochs only grow


def ray_local_tmp():
    import tempfile

    return tempfile.mkdtemp(prefix="h10_progress_")


def test_dry_run_estimate_uses_the_newest_measured_experiment(tmp_path):
    from ssl_ray.tuning import results as R

    p = {"method": "supervised", "dataset": "digits", "trials": 8, "epochs_nominal": 20.0}
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
    assert line.startswith("rough time: ~20s (20 epochs x 2.00 s per epoch, measured in a, / 2 trial(s) at once")
    assert P.dry_run_estimate(p, "s3://bucket/x", 2).startswith("rough time: unknown")
