"""Results each trial of a running search has recorded so far (test helper): ssl-ray's own row files, which the
driver writes as each result arrives (Tune's own copy of result.json in the storage waits for its rare
experiment snapshots: tuning/ray_internals item 10), so a test can wait for "trial k reached epoch e"."""
from pathlib import Path


def rows_per_trial(exp: str | Path) -> dict[str, int]:
    """{trial folder name: result rows recorded} for every trial folder of the experiment `exp`."""
    return {d.name: len(list((d / "ssl_ray_rows").glob("*.json"))) for d in Path(exp).glob("trial_fn_*")}
