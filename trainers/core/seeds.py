"""Seed studies, behind ``trainers/seeds.py``: one ``fit.py`` configuration
trained with several seeds, one run directory each (``ROOT/seed-S``), and the
spread of their accuracy reported, as the fast.ai Imagenette leaderboard
reports the mean of 5 runs.

:func:`train_seeds` runs ``fit.py`` once per seed as a child process (a
finished seed is skipped, an unfinished one resumed by ``fit.py`` itself);
:func:`report` reads finished run directories (config.json, metrics.json and
``evaluate.py``'s eval-*.json) and gives each run's figures, their mean, sample
standard deviation (n-1), minimum and maximum, after checking that the runs
differ in nothing but the seed (:func:`trainers.core.config.record_identity`).
:func:`seed_study` is the whole command."""

from __future__ import annotations

import json
import math
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys

from trainers.core.config import record_identity
from trainers.core.errors import UserError
from trainers.core.files import finite_or_none, read_json, strict, write_json_atomic

FIT = pathlib.Path(__file__).resolve().parents[1] / "fit.py"  # the package's own fit.py, wherever we run from
PREEMPTED = 75  # fit.py's exit status after SIGTERM and a backup: the same command resumes
FORBIDDEN_FLAGS = ("--seed", "--output-dir")  # this tool sets them, one per seed
PERCENT = ("top1", "top5", "best_val_accuracy")
COLUMNS = (
    ("run", "run"),
    ("seed", "seed"),
    ("top1", "top-1"),
    ("top5", "top-5"),
    ("best_val_accuracy", "best epoch"),
    ("wall_minutes", "wall (min)"),
    ("images_per_second", "images/s"),
    ("cpus", "CPU"),
)
SUMMARY_ROWS = (("mean", "mean"), ("std", "std (n-1)"), ("min", "min"), ("max", "max"))
ONE_RUN = "n/a (1 run)"


class Preempted(UserError):
    """fit.py was stopped by SIGTERM after writing its backup: the same command resumes."""

    exit_code = PREEMPTED


class SeedFailed(UserError):
    """fit.py failed for one seed (its own message is above); the later seeds were not started."""

    exit_code = 3


# ---------------------------------------------------------------- arguments
def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` (those seeds, in that order) or ``"3"`` (seeds 0, 1, 2)."""
    spelling = f"--seeds {text!r}; expected a count N (seeds 0 to N-1) or a comma list of distinct seeds, e.g. 0,1,2"
    parts = [part.strip() for part in str(text).split(",")]
    if not all(part.isdigit() for part in parts):
        raise UserError(spelling)
    numbers = [int(part) for part in parts]
    if len(numbers) == 1:
        if numbers[0] < 1:
            raise UserError(f"--seeds {text}; a count of seeds must be at least 1")
        return list(range(numbers[0]))
    if len(set(numbers)) != len(numbers):
        raise UserError(f"--seeds {text} repeats a seed; each seed is one run")
    if max(numbers) >= 2**32:
        raise UserError(f"--seeds {text}; a seed must be below 2**32")
    return numbers


def check_fit_flags(flags) -> list[str]:
    """``flags`` (fit.py's, after ``--``), refused when empty or when they set
    what this tool sets per seed (--seed, --output-dir, or an abbreviation
    argparse would accept)."""
    flags = list(flags)
    if not flags:
        raise UserError("no fit.py flags; give them after --, e.g. seeds.py --seeds 3 --root DIR -- --arch resnet20")
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name.startswith("--") and len(name) > 3:
            clash = [f for f in FORBIDDEN_FLAGS if f.startswith(name)]
            if clash:
                raise UserError(
                    f"the fit.py flags set {flag}; seeds.py sets {clash[0]} itself for each seed "
                    "(--seed S, --output-dir ROOT/seed-S): remove it"
                )
    return flags


def seed_dir(root, seed: int) -> pathlib.Path:
    return pathlib.Path(root).expanduser() / f"seed-{seed}"


def is_finished(run_dir: pathlib.Path) -> bool:
    """What fit.py calls finished: the run wrote metrics.json."""
    return (run_dir / "metrics.json").is_file()


# ----------------------------------------------------------------- training
def fit_command(seed: int, root, fit_flags, *, nice=None, fit=None, python=None) -> list[str]:
    """The command line that trains ``seed``: fit.py with ``fit_flags``,
    ``--seed S --output-dir ROOT/seed-S``, under ``nice -n N`` if asked."""
    command = [
        python or sys.executable,
        str(fit or FIT),
        *fit_flags,
        "--seed",
        str(seed),
        "--output-dir",
        str(seed_dir(root, seed)),
    ]
    if nice is not None:
        where = shutil.which("nice")
        if not where:
            raise UserError("--nice needs the nice command, which is not on PATH")
        command = [where, "-n", str(nice), *command]
    return command


def _run_child(command: list[str]) -> int:
    """Runs ``command`` with this process's stdout and stderr; a SIGTERM sent
    to this process is passed on to it (fit.py then backs up and exits 75)."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = subprocess.Popen(command)
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    except ValueError:  # not the main thread: no handler, the child is still waited for
        previous = None
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # Ctrl-C reaches the child too (same process group): wait for its exit
                continue
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def train_seeds(seeds, root, fit_flags, *, nice=None, fit=None, python=None, run=_run_child) -> list[int]:
    """Trains each seed in order, skipping those already finished; returns the
    seeds trained now. A child that exits 75 raises :class:`Preempted`, any
    other failure :class:`SeedFailed` (one line naming the seed and status);
    later seeds are not started. Runs that differ in more than the seed stop it
    as soon as they are found (:func:`check_same_configuration`)."""
    root = pathlib.Path(root).expanduser()
    fit_flags = check_fit_flags(fit_flags)
    fit = pathlib.Path(fit or FIT)  # a stand-in trainer in tests
    if not fit.is_file():
        raise UserError(f"fit.py not found at {fit}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot make --root {root}: {error.strerror or error}") from None
    done = [s for s in seeds if is_finished(seed_dir(root, s))]
    check_same_configuration([seed_dir(root, s) for s in done])
    trained = []
    for position, seed in enumerate(seeds, 1):
        run_dir = seed_dir(root, seed)
        if is_finished(run_dir):
            print(f"seed {seed} ({position} of {len(seeds)}): finished already in {run_dir}, skipped", flush=True)
            continue
        command = fit_command(seed, root, fit_flags, nice=nice, fit=fit, python=python)
        state = "resuming" if (run_dir / "config.json").exists() else "training"
        print(f"seed {seed} ({position} of {len(seeds)}): {state}: {shlex.join(command)}", flush=True)
        code = run(command)
        if code == PREEMPTED:
            raise Preempted(
                f"seed {seed}: fit.py was stopped (SIGTERM) after writing its backup (exit 75); "
                "rerun the same command to resume it and the seeds after it"
            )
        if code != 0:
            raise SeedFailed(
                f"seed {seed}: fit.py {_exit_status(code)} (its message is above); later seeds not started"
            )
        if not is_finished(run_dir):
            raise SeedFailed(f"seed {seed}: fit.py exited 0 but wrote no {run_dir / 'metrics.json'}")
        trained.append(seed)
        check_same_configuration([seed_dir(root, s) for s in seeds if is_finished(seed_dir(root, s))])
    return trained


# ------------------------------------------------------------------ reading
def find_finished(paths) -> list[pathlib.Path]:
    """The finished fit.py run directories given (``--runs``): each path is a
    finished run directory, or a folder searched for them (backups excluded)."""
    found = []
    for given in paths:
        path = pathlib.Path(given).expanduser()
        if not path.exists():
            raise UserError(f"--runs {given} does not exist")
        if (path / "config.json").is_file():
            if not is_finished(path):
                raise UserError(f"--runs {given} is not finished (no metrics.json): only finished runs are reported")
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(
                p.parent
                for p in path.rglob("metrics.json")
                if (p.parent / "config.json").is_file() and "backup" not in p.parts
            )
            if not candidates:
                raise UserError(
                    f"--runs {given} holds no finished fit.py run (a folder with config.json and metrics.json)"
                )
        else:
            raise UserError(f"--runs {given} is not a run directory (no config.json)")
        found += [c for c in candidates if c.resolve() not in {f.resolve() for f in found}]
    return found


def evaluations(run_dir: pathlib.Path) -> dict:
    """Top-1 accuracy per view of the files ``evaluate.py`` wrote in ``run_dir``
    (eval-<model>-<split>[-10crop|-views].json), keyed "<view>, <model>, <split>"."""
    found = {}
    for path in sorted(run_dir.glob("eval-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a figure we cannot read is not reported; runs.py says why
        stem = path.stem[len("eval-") :]
        for suffix in ("-views", "-10crop"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        model, _, split = stem.rpartition("-")
        if isinstance(data.get("views"), dict):
            views = data["views"]
        elif data.get("view"):
            views = {data["view"]: data}
        else:
            continue
        for view, figures in views.items():
            error = finite_or_none(figures.get("top1_error")) if isinstance(figures, dict) else None
            if error is not None:
                found.setdefault(f"{view}, {model or 'model'}, {split}", 1 - error)
    return found


def describe(run_dir: pathlib.Path, label: str) -> dict:
    """One finished run's figures (accuracies as fractions); a missing figure
    is None and ``why`` says why."""
    config = read_json(run_dir / "config.json", "run configuration")
    metrics = read_json(run_dir / "metrics.json", "run metrics")
    row = {"run": label, "run_dir": str(run_dir), "seed": config.get("seed"), "why": {}}
    top1, top5 = finite_or_none(metrics.get("test_top1_error")), finite_or_none(metrics.get("test_top5_error"))
    wall = finite_or_none(metrics.get("wall_seconds"))
    row["top1"] = None if top1 is None else 1 - top1
    row["top5"] = None if top5 is None else 1 - top5
    row["best_val_accuracy"] = finite_or_none(metrics.get("best_val_accuracy"))
    row["wall_minutes"] = None if wall is None else wall / 60
    row["images_per_second"] = finite_or_none(metrics.get("train_images_per_second"))
    row["cpus"] = metrics.get("cpus") or None
    row["split"] = metrics.get("test_split")
    reasons = {
        "top1": "no finite test_top1_error in metrics.json",
        "top5": "no finite test_top5_error in metrics.json",
        "best_val_accuracy": "no validated epoch",
        "wall_minutes": "no wall_seconds in metrics.json",
        "images_per_second": "too few steady-state steps",
        "cpus": "not recorded",
    }
    row["why"] = {key: why for key, why in reasons.items() if row[key] is None}
    row["evaluations"] = evaluations(run_dir)
    row["_config"] = config
    return row


def check_same_configuration(run_dirs) -> dict:
    """The shared identity of ``run_dirs``' config.json, the seed left out;
    runs that differ in anything else are refused in one line naming the keys."""
    identities = [
        (d, record_identity(read_json(pathlib.Path(d) / "config.json", "run configuration"))) for d in run_dirs
    ]
    if not identities:
        return {}
    for _, identity in identities:
        identity.pop("seed", None)
    first_dir, first = identities[0]
    differing = []
    for key in first:
        for other_dir, other in identities[1:]:
            if other[key] != first[key]:
                differing.append(
                    f"{key} ({json.dumps(first[key])} in {pathlib.Path(first_dir).name}, "
                    f"{json.dumps(other[key])} in {pathlib.Path(other_dir).name})"
                )
                break
    if differing:
        raise UserError(
            "the runs differ in more than the seed, so their spread is not a seed's: " + "; ".join(differing)
        )
    return first


def statistics(values) -> dict:
    """n, mean, sample standard deviation (n-1), min and max of the numbers in
    ``values`` (None skipped). Where a figure cannot be given it is None and
    ``why`` says why (one run: no standard deviation)."""
    numbers = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(numbers)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "why": "no run has this figure"}
    mean = math.fsum(numbers) / n
    result = {"n": n, "mean": mean, "std": None, "min": min(numbers), "max": max(numbers)}
    if n == 1:
        result["why"] = ONE_RUN
    else:
        result["std"] = math.sqrt(math.fsum((x - mean) ** 2 for x in numbers) / (n - 1))
    return result


def report(run_dirs, labels=None, *, asked=None, unfinished=None, fit_flags=None) -> dict:
    """The seed study's report on the finished ``run_dirs``: each run, the
    statistics per figure, the views evaluate.py scored, the shared
    configuration. ``unfinished`` (seed: status) lists what is missing."""
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("no finished run to report")
    labels = labels or [d.name for d in run_dirs]
    configuration = check_same_configuration(run_dirs)
    rows = [describe(d, label) for d, label in zip(run_dirs, labels)]
    seen = {}
    for row in rows:
        if row["seed"] in seen:
            raise UserError(
                f"{seen[row['seed']]} and {row['run']} both ran seed {row['seed']}; a seed study needs distinct seeds"
            )
        seen[row["seed"]] = row["run"]
    first = rows[0].pop("_config")
    for row in rows[1:]:
        row.pop("_config")
    summary = {key: statistics(row[key] for row in rows) for key, _ in COLUMNS if key not in ("run", "seed", "cpus")}
    views = sorted({view for row in rows for view in row["evaluations"]})
    data = first.get("data") or {}
    return strict(
        {
            "runs": rows,
            "seeds": [row["seed"] for row in rows],
            "summary": summary,
            "evaluations": {view: statistics(row["evaluations"].get(view) for row in rows) for view in views},
            "configuration": configuration,
            "dataset": data.get("name") or configuration.get("dataset"),
            "split": rows[0]["split"],
            "synthetic": bool(first.get("synthetic")),
            "asked": asked,
            "unfinished": {str(k): v for k, v in (unfinished or {}).items()},
            "fit_flags": list(fit_flags) if fit_flags is not None else None,
            "units": "accuracies are fractions (0.8512 is 85.12%), on the run's test split (metrics.json's "
            "test_split; Imagenette's validation split); std is the sample standard deviation (n-1); "
            "wall time in minutes over all of a run's sessions",
        }
    )


# ---------------------------------------------------------------- rendering
def _figure(key, value, spread=False) -> str:
    if key in PERCENT or "," in key:  # an accuracy; the evaluation views' keys ("10-crop, final, test") hold commas
        return f"±{100 * value:.2f}" if spread else f"{100 * value:.2f}%"
    if key == "wall_minutes":
        return f"±{value:.1f}" if spread else f"{value:.1f}"
    if key == "images_per_second":
        return f"±{value:.1f}" if spread else f"{value:.1f}"
    return str(value)


def _cell(row, key) -> str:
    value = row["evaluations"].get(key) if "," in key else row.get(key)
    if value is None:
        return row.get("why", {}).get(key, "-") if "," not in key else "not evaluated"
    if key == "cpus":
        return "; ".join(value)
    if key in ("run", "seed"):
        return str(value)
    return _figure(key, value)


def _summary_cell(stats, which) -> str:
    value = stats.get(which)
    if value is None:
        if which == "std" and stats.get("n") == 1:
            return ONE_RUN
        return "-"
    return value


def render(result: dict, fmt: str = "text") -> str:
    """The report as a table (text or markdown) of the runs, then mean, std
    (n-1), min and max, and a line on top-1; or the JSON itself."""
    if fmt == "json":
        return json.dumps(result, indent=2, allow_nan=False)
    views = list(result["evaluations"])
    columns = [(key, title) for key, title in COLUMNS if key != "cpus"] + [(v, v) for v in views] + [("cpus", "CPU")]
    header = [title for _, title in columns]
    body = [[_cell(row, key) for key, _ in columns] for row in result["runs"]]
    for which, title in SUMMARY_ROWS:
        line = []
        for key, _ in columns:
            stats = result["evaluations"].get(key) if key in views else result["summary"].get(key)
            if key == "run":
                line.append(title)
            elif stats is None:
                line.append("")
            else:
                value = _summary_cell(stats, which)
                line.append(value if isinstance(value, str) else _figure(key, value, spread=which == "std"))
        body.append(line)
    right = {t for k, t in columns if k not in ("run", "cpus")}
    if fmt == "markdown":
        rule = "|" + "|".join("---:" if h in right else "---" for h in header) + "|"
        lines = ["| " + " | ".join(header) + " |", rule]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
    else:
        widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(x, widths, header)).rstrip()
            for x in [header, *body]
        ]
    lines += ["", headline(result)]
    return "\n".join(lines)


def headline(result: dict) -> str:
    """One line: top-1 over the runs, mean, std, min, max, mean wall time, and what was trained."""
    top1, wall = result["summary"]["top1"], result["summary"]["wall_minutes"]
    seeds = ", ".join(str(s) for s in result["seeds"])
    if top1["mean"] is None:
        figures = "no finite top-1"
    else:
        std = ONE_RUN if top1["std"] is None else f"{100 * top1['std']:.2f} points (n-1)"
        figures = (
            f"mean {100 * top1['mean']:.2f}%, std {std}, min {100 * top1['min']:.2f}%, max {100 * top1['max']:.2f}%"
        )
    if wall["mean"] is not None:
        figures += f"; mean wall time {wall['mean']:.1f} min a run"
    c = result["configuration"]
    if c.get("epochs"):
        length = f"{c['epochs']:g} epoch{'' if c['epochs'] == 1 else 's'}"
    else:
        length = f"{c.get('steps')} iterations"
    what = (
        f"{c.get('arch')} on {result['dataset']} ({result['split']} split) at {c.get('image_size')} px, "
        f"recipe {c.get('recipe')}, {length}"
    )
    line = f"top-1 over {top1['n']} run{'s' if top1['n'] != 1 else ''} (seeds {seeds}): {figures}. {what}"
    if result["synthetic"]:
        line += " [SYNTHETIC DATA]"
    if result["unfinished"]:
        line += ". Not finished: " + ", ".join(f"seed {s} ({why})" for s, why in result["unfinished"].items())
    return line


# -------------------------------------------------------------- the command
def _root_runs(root: pathlib.Path, seeds):
    """The finished seed directories under ``root`` (``seeds``, or every
    seed-S found), and the unfinished ones with their state."""
    if seeds is None:
        found = []
        for path in root.glob("seed-*"):
            suffix = path.name[len("seed-") :]
            if path.is_dir() and suffix.isdigit():
                found.append(int(suffix))
        seeds = sorted(found)
    finished = [s for s in seeds if is_finished(seed_dir(root, s))]
    unfinished = {}
    for s in seeds:
        if s not in finished:
            unfinished[s] = (
                "stopped, resumes when rerun" if (seed_dir(root, s) / "config.json").exists() else "not started"
            )
    return finished, unfinished


def seed_study(
    *,
    seeds: str | None = None,
    root=None,
    runs=None,
    fit_flags=(),
    nice: int | None = None,
    report_only: bool = False,
    fmt: str = "text",
    output=None,
    fit=None,
    python=None,
    run=_run_child,
) -> dict:
    """What ``trainers/seeds.py`` does: trains the seeds under ``root`` (unless
    ``report_only``), or takes the finished ``runs``; prints the report in
    ``fmt`` and writes it as JSON to ``output`` (default ROOT/seeds.json;
    with ``runs``, only where ``output`` is given). Returns the report."""
    if (root is None) == (runs is None):
        raise UserError("give --root DIR (train and report the seeds there) or --runs RUN_DIR ... (report those runs)")
    if runs is not None:
        if seeds is not None or fit_flags or nice is not None:
            raise UserError(
                "--runs reports finished runs and trains nothing: --seeds, --nice and fit.py flags go with --root"
            )
        run_dirs = find_finished(runs)
        names = [d.name for d in run_dirs]  # the folder's name where that tells them apart; run_dir has the path
        result = report(run_dirs, names if len(set(names)) == len(names) else [str(d) for d in run_dirs])
        _emit(result, fmt, output)
        return result
    root = pathlib.Path(root).expanduser()
    asked = parse_seeds(seeds) if seeds is not None else None
    stop = None
    if not report_only:
        if asked is None:
            raise UserError(
                "--seeds is needed to train (e.g. --seeds 5, or --seeds 0,1,2); --report-only reports what is there"
            )
        try:
            train_seeds(asked, root, fit_flags, nice=nice, fit=fit, python=python, run=run)
        except (Preempted, SeedFailed) as error:
            stop = error
    elif not root.is_dir():
        raise UserError(f"--root {root} does not exist")
    finished, unfinished = _root_runs(root, asked)
    if not finished:
        if stop is not None:
            raise stop
        raise UserError(f"no finished seed run (seed-S/metrics.json) in {root}")
    try:
        result = report(
            [seed_dir(root, s) for s in finished],
            [f"seed-{s}" for s in finished],
            asked=asked,
            unfinished=unfinished,
            fit_flags=None if report_only else list(fit_flags),
        )
        _emit(result, fmt, output or root / "seeds.json")
    except UserError as error:
        if stop is None:
            raise
        print(f"no report of the finished seeds: {error}", file=sys.stderr)
    if stop is not None:
        raise stop
    return result


def _emit(result: dict, fmt: str, output) -> None:
    print(render(result, fmt))
    if output is not None:
        output = pathlib.Path(output).expanduser()
        write_json_atomic(output, result)
        if fmt != "json":
            print(f"written: {output}")
