"""Run directories side by side: one row per run, finished or not.

    python trainers/runs.py ~/resnet-runs/imagenette                 # every run below, a text table
    python trainers/runs.py RUN_DIR [RUN_DIR ...] --format markdown
    python trainers/runs.py saved_models --format json

A run directory is one that ``fit.py`` made (it holds ``config.json``). Each row
gives the network, dataset, recipe and length; where the run stands (finished,
or the iteration of its last backup or epoch); its final top-1 on the test split
(``metrics.json``; the leaderboard's centre crop) and its best epoch's
validation top-1 (``best.json``); the 10-crop where ``evaluate.py RUN_DIR
--all-views`` (or ``--ten-crop``) has scored the final model; the steady-state
training speed, the wall time over all its sessions, and the CPUs its epochs ran
on. A figure that is missing says why. Reads files only: no training, nothing
written.
"""

from __future__ import annotations

import argparse

from trainers.core.errors import run_main, UserError
from trainers.core.run_table import run_table, unreadable


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run directories, or folders searched for them")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows, table = run_table(args.paths, args.format)
    print(table)
    problem = unreadable(rows)
    if problem:
        raise UserError(problem)
    return rows


if __name__ == "__main__":
    run_main(main)
