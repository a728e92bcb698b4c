"""The `ssl-ray` command line: commands only; the logic lives in the package.

The group and what every command shares to run a search are here; the commands live in train (train), tune (tune,
compare) and report (report, tensorboard, export, predict, methods, datasets), each imported when its command is
first asked for (COMMANDS), so `ssl-ray --help` or `ssl-ray train` does not import the others; common holds the
shared options and checks. `ssl_ray.cli:main` is the console script; `python -m ssl_ray.cli` runs it too."""
from __future__ import annotations

import contextlib
import importlib
import json
import sys
from typing import Any

import click

from ..errors import SSLRayError

COMMANDS = {"train": "train", "tune": "tune", "compare": "tune", "report": "report", "tensorboard": "report",
            "export": "report", "predict": "report", "methods": "report", "datasets": "report"}
"""Each command and the module of this package that defines it (registering it on `main` when imported)."""
EXPORTS = {"train": "train", "tune_options": "tune", "TUNE_OPTIONS": "tune", "PERF_OPTIONS": "common",
           "Opt": "common"}
"""Names `from ssl_ray.cli import ...` gives (tests and benchmarks use them), and the module each comes from."""


class _Group(click.Group):
    """Every SSLRayError (bad input, missing data, unreachable cluster) becomes one line and exit 2; Ctrl-C exits
    130 and SIGTERM, taken as Ctrl-C is (tuning/lock.py: the run recorded as interrupted), 143."""

    def invoke(self, ctx: click.Context) -> Any:
        from ..tuning.lock import TERMINATED, Terminated, catch_sigterm, restore_sigterm

        TERMINATED.clear()
        previous = catch_sigterm()
        try:
            return super().invoke(ctx)
        except SSLRayError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted" + (" (SIGTERM)" if TERMINATED.is_set() else ""), err=True)
            ctx.exit(Terminated.EXIT_CODE if TERMINATED.is_set() else 130)
        except click.exceptions.Exit as e:  # a command that told its own interruption (train) exits 130
            if e.exit_code == 130 and TERMINATED.is_set():
                ctx.exit(Terminated.EXIT_CODE)
            raise
        finally:
            restore_sigterm(previous)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            importlib.import_module(f"{__name__}.{COMMANDS[name]}")
        return super().get_command(ctx, name)


def _main() -> None:
    """Run and tune semi-supervised learning methods with Ray Train and Ray Tune."""


main: click.Group = click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                                              "max_content_width": 110}
                                )(click.version_option(package_name="ssl-ray")(_main))


def _quiet_ray_analysis() -> None:
    """Ray's ResultGrid warns "Failed to fetch metrics for N trial(s)" for runs without Tune's own result files
    (the --confirm-seeds runs: ssl-ray reads its results from its own files, results.parquet and summary.json),
    once per method under `compare`: noise to a user, so that logger (Ray 2.60's) shows only errors."""
    import logging

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _run_tune(space, opts, as_json: bool) -> dict:
    """run_tune; with --json, Tune's live trial table goes to stderr so that stdout holds only the JSON."""
    from ..tuning.tune import run_tune

    _quiet_ray_analysis()

    if not as_json:
        return run_tune(space, opts)
    with contextlib.redirect_stdout(sys.stderr):
        return run_tune(space, opts)


def _emit(summary: dict, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(human, err=True)
        click.echo(json.dumps(summary, default=str))
    else:
        click.echo(human)


def __getattr__(name: str) -> Any:  # PEP 562: EXPORTS, imported when first asked for
    if name in EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
