"""One fit.py configuration trained with several seeds: the mean, the spread and each run.

    python trainers/seeds.py --seeds 5 --root ~/runs/r18d-5ep --nice 19 -- --arch resnet18d --recipe fast \\
        --image-size 128 --epochs 5 --data-dir ../shared/tensorflow_datasets
    python trainers/seeds.py --seeds 0,1,2 --root DIR -- FIT_FLAGS...   # those seeds
    python trainers/seeds.py --root DIR --report-only [--format markdown]
    python trainers/seeds.py --runs RUN_DIR [RUN_DIR ...] [--output seeds.json]

For each seed in order, ``fit.py FIT_FLAGS --seed S --output-dir DIR/seed-S``
runs as a child process (under ``nice -n N`` with ``--nice N``). A finished seed
(seed-S/metrics.json) is skipped and an unfinished one resumes, so the same
command continues a study that was stopped. If fit.py is preempted (SIGTERM,
exit 75; a SIGTERM sent to this command is passed on to it) the command stops
with 75 too; any other failure stops it with one line naming the seed.

The report, printed and written atomically as strict JSON (DIR/seeds.json, or
--output): per run, its seed, top-1 and top-5 accuracy on the test split
(Imagenette's validation split), the best epoch's validation top-1, wall
minutes, training images/s and CPU; then the mean, the sample standard
deviation (n-1), min and max of each, as the fast.ai Imagenette leaderboard
reports the mean of 5 runs; and the views evaluate.py scored (eval-*.json), if
any. Runs that differ in more than the seed (config.json's settings) are
refused. --runs reports finished run directories made by other means (a queue).
"""

from __future__ import annotations

import argparse
import sys

import trainers  # noqa: F401  (first: a quiet TensorFlow start, on oneDNN kernels)
from trainers.core.errors import run_main
from trainers.core.seeds import seed_study


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s (--root DIR [--seeds SEEDS] | --runs RUN_DIR [RUN_DIR ...]) [options] [-- FIT_FLAGS...]",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", help="the study's folder: one run directory per seed, seed-S, and seeds.json")
    where.add_argument(
        "--runs",
        nargs="+",
        metavar="RUN_DIR",
        help="report these finished run directories (or the finished runs in these folders) instead; trains nothing",
    )
    p.add_argument(
        "--seeds",
        help="N (seeds 0 to N-1) or a comma list, e.g. 0,1,2 (with --report-only: default every seed-S in --root)",
    )
    p.add_argument("--nice", type=int, metavar="N", help="run fit.py under nice -n N (e.g. 19 beside other work)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the finished seeds in --root")
    p.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="printed table (default text; markdown for docs)",
    )
    p.add_argument("--output", help="write the JSON report here (default DIR/seeds.json; with --runs, only if given)")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    fit_flags = []
    if "--" in argv:
        cut = argv.index("--")
        argv, fit_flags = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (fit.py's flags go after --)")
    return seed_study(
        seeds=args.seeds,
        root=args.root,
        runs=args.runs,
        fit_flags=fit_flags,
        nice=args.nice,
        report_only=args.report_only,
        fmt=args.format,
        output=args.output,
    )


if __name__ == "__main__":
    run_main(main)
