"""BOHB's HyperBand (HyperBandForBOHB): the scheduler the BOHB searcher (`--search bohb`, `searcher: bohb`)
brings with it, replacing the space's; TuneBOHB chooses the brackets. Its brackets are not saved, so a BOHB search
cannot be resumed."""
from __future__ import annotations

from typing import Any

from ...errors import SSLRayError
from .base import TIME_ATTR, Fail, Kind


class BOHB(Kind):
    name, order = "bohb", 4
    label = "BOHB"
    rungs_not_drawn = "BOHB's HyperBand brackets"
    chosen_by_name = False
    searcher = "bohb"
    resumable = False
    not_resumable = ("a BOHB search, which cannot be resumed: the brackets of BOHB's HyperBand are not saved; its "
                     "results so far stay there; start a new experiment")

    def validate(self, s: Any, fail: Fail) -> None:
        if s.reduction_factor < 2:
            raise fail(("scheduler", "reduction_factor"), f"must be at least 2, got {s.reduction_factor}")
        super().validate(s, fail)

    def check(self, space: Any, o: Any) -> None:
        if space.searcher != self.searcher:
            raise SSLRayError(f"scheduler bohb is BOHB's own HyperBand: it comes with searcher bohb (--search bohb), "
                              f"not {space.searcher or 'random'}")

    def build(self, space: Any, exp: str, n_trials: int) -> Any:
        from ray.tune.schedulers.hb_bohb import HyperBandForBOHB

        s = space.scheduler
        return HyperBandForBOHB(time_attr=TIME_ATTR, max_t=s.max_epochs, reduction_factor=s.reduction_factor)

    def plan_line(self, p: dict[str, Any]) -> str:
        return f"BOHB's HyperBand: up to {p['max_epochs']} epochs per trial, brackets chosen by TuneBOHB"


KIND = BOHB()
