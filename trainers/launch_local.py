"""Starts a multi-worker ``fit.py`` job on this machine, for development and
tests: N worker processes on 127.0.0.1, each with its own ``TF_CONFIG``.

    python trainers/launch_local.py --workers 2 -- --arch resnet20 --dataset synthetic --output-dir /tmp/run

Everything after ``--`` goes to every worker's ``fit.py`` (``--strategy
multi-worker`` is added when no ``--strategy`` is given). Each worker's output
is printed with a ``[worker i]`` prefix. If any worker fails, the others are
stopped (as a cluster scheduler would), so a job never hangs on a dead peer;
the same command then resumes from the run's last backup. The exit status is
the chief's, or the first failed worker's when the job was stopped for it.
"""

from __future__ import annotations

import argparse
import sys

from trainers.core.errors import run_main, UserError
from trainers.core.launcher import launch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Start N fit.py workers on 127.0.0.1 under MultiWorkerMirroredStrategy.",
        usage="%(prog)s --workers N -- <fit.py arguments>",
    )
    parser.add_argument("--workers", type=int, required=True, help="number of worker processes (2 or more)")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds the other workers get to stop after one fails (then SIGKILL)"
    )
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is fit.py's, which argparse would otherwise try to read.
    if "--" in argv:
        split = argv.index("--")
        own, fit_args = argv[:split], argv[split + 1 :]
    else:
        own, fit_args = argv, []
    args = build_parser().parse_args(own)
    if args.workers < 2:
        raise UserError(f"--workers {args.workers}; a multi-worker job needs at least 2 (for one, run fit.py)")
    if not fit_args:
        raise UserError(
            "no fit.py arguments: give them after `--`, e.g. -- --arch resnet20 --dataset synthetic --output-dir DIR"
        )
    status = launch(args.workers, fit_args, grace=args.grace)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_main(main)
