"""A multi-worker ``fit.py`` job on this machine, for development and tests:
N worker processes on 127.0.0.1, each with its own ``TF_CONFIG``. Behind
``trainers/launch_local.py``, whose docstring says how a job runs and ends."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

FIT = pathlib.Path(__file__).resolve().parents[1] / "fit.py"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def tf_configs(ports: list[int]) -> list[str]:
    """One ``TF_CONFIG`` per worker; worker 0 is the chief."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(len(ports))]


def _pump(stream, prefix, out):
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()
    stream.close()


def launch(workers: int, fit_args: list[str], *, grace: float = 10.0, script=None) -> int:
    """Runs the job; returns its exit status (see the module's docstring)."""
    if not any(a == "--strategy" or a.startswith("--strategy=") for a in fit_args):
        fit_args = [*fit_args, "--strategy", "multi-worker"]
    script = script or str(FIT)
    procs, pumps = [], []
    for i, config in enumerate(tf_configs(free_ports(workers))):
        env = {**os.environ, "TF_CONFIG": config}
        proc = subprocess.Popen(
            [sys.executable, script, *fit_args],
            env=env,
            text=True,
            bufsize=1,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        procs.append(proc)
        print(f"[launch] worker {i}{' (chief)' if i == 0 else ''}: pid {proc.pid}", file=sys.stderr, flush=True)
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            t = threading.Thread(target=_pump, args=(stream, f"[worker {i}] ", out), daemon=True)
            t.start()
            pumps.append(t)

    def stop_all(sig):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass

    def forward(signum, frame):
        stop_all(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    failed = None  # (worker, status) of the first worker that failed
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                status = p.poll()
                if status not in (None, 0) and failed is None:
                    failed = (i, status)
                    print(
                        f"[launch] worker {i} exited with status {status}; stopping the others",
                        file=sys.stderr,
                        flush=True,
                    )
                    stop_all(signal.SIGTERM)
                    deadline = time.time() + grace
                    while time.time() < deadline and any(q.poll() is None for q in procs):
                        time.sleep(0.1)
                    stop_all(signal.SIGKILL)
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for p in procs:
            p.wait()
        for t in pumps:
            t.join(timeout=5)
    chief = procs[0].returncode
    if failed is not None and failed[0] != 0:
        print(
            f"[launch] the job failed: worker {failed[0]} exited with status {failed[1]}; run the same command "
            "again to resume from the last backup",
            file=sys.stderr,
            flush=True,
        )
        return failed[1] if failed[1] > 0 else 128 - failed[1]
    return chief if chief >= 0 else 128 - chief
