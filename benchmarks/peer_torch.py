"""Training throughput of our networks against PyTorch on the same CPU, with
the machine's measured ceiling for each precision.

    python benchmarks/peer_torch.py                                   # every pair and variant
    python benchmarks/peer_torch.py --pair resnet20 --rounds 1 --steps 3 --warmup 2
    python benchmarks/peer_torch.py --torch-python ~/torch-venv/bin/python --pair resnet50
    python benchmarks/peer_torch.py --no-torch --no-ceiling           # ours alone

PyTorch is not a dependency of this project: install it in a venv of its own,
``python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch torchvision``,
and point the script at it with ``--torch-python`` (or ``TORCH_PYTHON``;
``~/torch-venv/bin/python`` is tried by default, then this interpreter). Without
torch our variants are measured and reported alone.

Pairs (training step: SGD lr 0.01 momentum 0.9, cross entropy from logits, one
fixed batch of random inputs and labels):
  resnet20, resnet56: resnet_keras against an option-A CIFAR ResNet written in
            PyTorch as akamaster/pytorch_resnet_cifar10 writes it (BasicBlock
            of two 3x3 conv + BN, shape changes through a lambda that keeps
            every second pixel and pads channels), 32x32, batch 128, 10 classes.
  resnet50: resnet_keras "resnet50" (v1, stride in the first 1x1) against
            torchvision.models.resnet50(weights=None) (v1.5, stride in the
            3x3: 6% more multiply-adds), 224x224, batch 16, 1000 classes.

Variants: torch float32 and bf16 autocast (torch.autocast("cpu", bfloat16)),
each with contiguous (NCHW) and channels-last tensors; ours under the float32
and mixed_bfloat16 dtype policies. Every variant runs in a child process of its
own (ours under this interpreter, torch under the torch one), so no two share
thread pools; torch uses torch.set_num_threads(os.cpu_count()), TensorFlow its
defaults. For each round the parent runs every variant's child once, the order
rotating from round to round; a child does --warmup untimed steps, then times
--steps steps one by one (perf_counter around ``train_on_batch``, which returns
numbers, or around the torch step up to ``loss.item()``). A variant's speed in
a round is batch / median step time; reported are the median over rounds and
the best round. Ratios are taken per round and given as median [min, max]:
ours-best / torch-best (the fastest variant of each side in that round), and
each of our variants against each torch variant of the same precision.

The ceiling, measured in a TensorFlow child: a 3x3 convolution of 256 channels
at 28x28, batch 32, NHWC, forward only, and a 2048^3 matmul, in bfloat16 and
float32 (GFLOP/s = 2 x multiply-adds / s); per precision the better of the two
is the ceiling. A variant's training GFLOP/s is 3 x forward FLOPs per image x
images/s, forward FLOPs being 2 x the multiply-adds of its own network
(resnet_keras.count_flops for ours, the same count by hooks for torch), and its
fraction of the ceiling of its precision is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks import check_counts  # (standard library only)

# Nothing beyond the standard library at module level: the torch children run
# this file under an interpreter that has neither TensorFlow nor this project.

PAIRS = {
    "resnet20": {"image_size": 32, "batch_size": 128, "steps": 10, "num_classes": 10},
    "resnet56": {"image_size": 32, "batch_size": 128, "steps": 5, "num_classes": 10},
    "resnet50": {"image_size": 224, "batch_size": 16, "steps": 3, "num_classes": 1000},
}
# name -> (side, precision class, child arguments)
VARIANTS = {
    "torch|float32|contiguous": ("torch", "float32", ["float32", "contiguous"]),
    "torch|float32|channels_last": ("torch", "float32", ["float32", "channels_last"]),
    "torch|bf16|contiguous": ("torch", "bfloat16", ["bf16", "contiguous"]),
    "torch|bf16|channels_last": ("torch", "bfloat16", ["bf16", "channels_last"]),
    "resnet_keras|float32": ("ours", "float32", ["float32"]),
    "resnet_keras|mixed_bfloat16": ("ours", "bfloat16", ["mixed_bfloat16"]),
}
RESULT_PREFIX = "PEER_TORCH_RESULT "
CEILING_CONV = (32, 28, 256)  # batch, height = width, channels in = out
CEILING_MATMUL = 2048
RECORDED_ENV = (
    "OMP_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "MKL_NUM_THREADS",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "TF_ENABLE_ONEDNN_OPTS",
)
INSTALL_HINT = (
    "python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch torchvision, "
    "then pass --torch-python ~/torch-venv/bin/python"
)


# --------------------------------------------------------------------------- children


def time_steps(step, warmup, steps):
    """Runs ``warmup`` untimed calls of ``step``, then returns the seconds of
    each of ``steps`` timed calls and the warm-up's total seconds."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - start
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    return durations, warmup_seconds


def _check_pair(pair):
    if pair not in PAIRS:
        raise SystemExit(f"error: unknown pair {pair!r}; expected one of {', '.join(PAIRS)}")
    return PAIRS[pair]


def child_keras(pair, policy, batch, steps, warmup):
    """Our network's training step under the dtype policy ``policy``."""
    config = _check_pair(pair)
    if policy not in ("float32", "mixed_bfloat16"):
        raise SystemExit(f"error: unknown policy {policy!r}; expected float32 or mixed_bfloat16")
    import keras
    import numpy as np

    import resnet_keras

    keras.config.set_dtype_policy(policy)
    model = resnet_keras.get_model(pair, num_classes=config["num_classes"], seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    size = config["image_size"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")  # our models take raw pixels
    labels = rng.integers(0, config["num_classes"], (batch,))
    durations, warmup_seconds = time_steps(lambda: model.train_on_batch(images, labels), warmup, steps)
    return {
        "step_seconds": durations,
        "warmup_seconds": warmup_seconds,
        "multiply_adds_per_image": resnet_keras.count_flops(model),
        "policy": keras.config.dtype_policy().name,
        "conv_compute_dtype": next(
            layer.compute_dtype for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
        ),
        "logits_dtype": str(model.outputs[0].dtype),
    }


def cifar_resnet_torch(n, num_classes=10):
    """An option-A CIFAR ResNet-(6n+2) in PyTorch, written the way
    akamaster/pytorch_resnet_cifar10 writes it."""
    import torch.nn.functional as F
    from torch import nn

    class LambdaLayer(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                # Option A: every second pixel, zero channels appended on both sides.
                pad = planes // 4
                self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad)))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out = out + self.shortcut(x)
            return F.relu(out)

    class CifarResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            stages, in_planes = [], 16
            for stage, planes in enumerate((16, 32, 64)):
                blocks = []
                for i in range(n):
                    blocks.append(BasicBlock(in_planes, planes, 2 if stage > 0 and i == 0 else 1))
                    in_planes = planes
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, num_classes)
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(module.weight)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = F.avg_pool2d(out, out.size()[3])
            return self.linear(out.view(out.size(0), -1))

    return CifarResNet()


def build_torch_model(pair):
    config = _check_pair(pair)
    if pair == "resnet50":
        import torchvision

        return torchvision.models.resnet50(weights=None)
    return cifar_resnet_torch({"resnet20": 3, "resnet56": 9}[pair], config["num_classes"])


def torch_multiply_adds(model, size):
    """Multiply-adds of one image through the model's convolutions and linear
    layers: what resnet_keras.count_flops counts."""
    import torch
    from torch import nn

    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total[0] += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total[0]


def child_torch(pair, precision, layout, batch, steps, warmup):
    """The torch training step in float32 or bf16 autocast, NCHW-contiguous or
    channels-last."""
    config = _check_pair(pair)
    if precision not in ("float32", "bf16") or layout not in ("contiguous", "channels_last"):
        raise SystemExit(f"error: unknown torch variant {precision} {layout}")
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = build_torch_model(pair)
    size = config["image_size"]
    multiply_adds = torch_multiply_adds(model, size)
    images = torch.rand(batch, 3, size, size)
    labels = torch.randint(0, config["num_classes"], (batch,))
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    bf16 = precision == "bf16"
    seen = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
            loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        seen["logits_dtype"] = str(logits.dtype)
        return loss.item()

    durations, warmup_seconds = time_steps(step, warmup, steps)
    return {
        "step_seconds": durations,
        "warmup_seconds": warmup_seconds,
        "multiply_adds_per_image": multiply_adds,
        "logits_dtype": seen.get("logits_dtype"),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }


def measure_ceiling(conv=CEILING_CONV, matmul=CEILING_MATMUL, repeats=5):
    """GFLOP/s (2 x multiply-adds per second) of a forward 3x3 convolution of
    ``conv`` = (batch, size, channels), NHWC, and of an ``matmul``^3 matrix
    product, in bfloat16 and float32: the best of ``repeats`` timed calls
    after two untimed ones."""
    import tensorflow as tf

    batch, size, channels = conv
    conv_fn = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")[0, 0, 0, 0])
    matmul_fn = tf.function(lambda a, b: tf.linalg.matmul(a, b)[0, 0])
    work = {"conv": 2 * batch * size * size * channels * channels * 9, "matmul": 2 * matmul**3}
    result = {"conv": {}, "matmul": {}, "best": {}, "sizes": {"conv": list(conv), "matmul": matmul}}
    for precision, dtype in (("bfloat16", tf.bfloat16), ("float32", tf.float32)):
        calls = {
            "conv": (
                conv_fn,
                (
                    tf.cast(tf.random.uniform((batch, size, size, channels)), dtype),
                    tf.cast(tf.random.normal((3, 3, channels, channels)), dtype),
                ),
            ),
            "matmul": (
                matmul_fn,
                (
                    tf.cast(tf.random.normal((matmul, matmul)), dtype),
                    tf.cast(tf.random.normal((matmul, matmul)), dtype),
                ),
            ),
        }
        for kind, (fn, inputs) in calls.items():
            durations, _ = time_steps(lambda: fn(*inputs).numpy(), 2, repeats)
            result[kind][precision] = work[kind] / min(durations) / 1e9
        result["best"][precision] = max(result["conv"][precision], result["matmul"][precision])
    return result


def child_main(args):
    """The hidden ``--child`` mode: measures one thing and prints one result line."""
    kind, rest = args.child[0], args.child[1:]
    counts = dict(batch=args.batch_size, steps=args.steps or 1, warmup=args.warmup)
    if kind == "keras" and len(rest) == 2:
        result = child_keras(*rest, **counts)
    elif kind == "torch" and len(rest) == 3:
        result = child_torch(*rest, **counts)
    elif kind == "ceiling" and not rest:
        result = measure_ceiling(tuple(args.ceiling_conv), args.ceiling_matmul)
    else:
        raise SystemExit(f"error: bad --child arguments {' '.join(args.child)!r}")
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


# --------------------------------------------------------------------------- parent


def find_torch(args):
    """The interpreter that runs the torch children, and what it has: a dict
    with "python", "version", "torchvision", "threads", ..., or with "python"
    None and "reason"."""
    if args.no_torch:
        return {"python": None, "reason": "not run: --no-torch"}
    explicit = args.torch_python or os.environ.get("TORCH_PYTHON")
    if explicit:
        candidates = [os.path.expanduser(explicit)]
    else:
        default = os.path.expanduser("~/torch-venv/bin/python")
        candidates = ([default] if os.path.exists(default) else []) + [sys.executable]
    probe = (
        "import json, torch\n"
        "try:\n    import torchvision; tv = torchvision.__version__\nexcept ImportError:\n    tv = None\n"
        "print(json.dumps({'version': torch.__version__, 'torchvision': tv, "
        "'default_threads': torch.get_num_threads(), 'interop_threads': torch.get_num_interop_threads(), "
        "'cpu_capability': torch.backends.cpu.get_cpu_capability(), "
        "'mkldnn': torch.backends.mkldnn.is_available()}))\n"
    )
    tried = []
    for python in candidates:
        try:
            done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as error:
            tried.append(f"{python} ({type(error).__name__})")
            continue
        if done.returncode == 0:
            try:
                return {"python": python, **json.loads(done.stdout.strip().splitlines()[-1])}
            except (ValueError, IndexError):
                pass
        tried.append(f"{python} (cannot import torch)")
    return {"python": None, "reason": "not run: torch not found", "tried": tried}


def child_command(variant, pair, args, torch_python):
    """The command line of one child measuring ``variant`` on ``pair``."""
    side, _, child_args = VARIANTS[variant]
    python, kind = (torch_python, "torch") if side == "torch" else (sys.executable, "keras")
    config = PAIRS.get(pair, {})
    return [
        python,
        "-m",
        "benchmarks.peer_torch",
        "--child",
        kind,
        pair,
        *child_args,
        "--batch-size",
        str(args.batch_size or config.get("batch_size", 1)),
        "--steps",
        str(args.steps or config.get("steps", 1)),
        "--warmup",
        str(args.warmup),
    ]


def run_child(command, label, timeout=None):
    """Runs one child; returns (its result dict, None), or (None, why) after
    printing one line naming ``label`` and the child's last stderr line."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        why = f"timed out after {timeout} s"
    except OSError as error:
        why = f"cannot start {command[0]}: {error}"
    else:
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if done.returncode == 0 and lines:
            try:
                return json.loads(lines[-1][len(RESULT_PREFIX) :]), None
            except ValueError:
                pass
        last = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "no stderr")
        why = f"exit {done.returncode}: {last}"
    print(f"{label}: failed ({why})", flush=True)
    return None, why


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def _ratio(per_round):
    """median [min, max] of the rounds' ratios that exist, or None."""
    values = [r for r in per_round if r is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": per_round}


def _divide(a, b):
    return _finite(a / b) if a is not None and b is not None and b > 0 else None


def run_pair(pair, args, torch_info, ceiling):
    config = PAIRS[pair]
    batch = args.batch_size or config["batch_size"]
    steps = args.steps or config["steps"]
    variants = {name: {"side": VARIANTS[name][0], "precision": VARIANTS[name][1]} for name in args.variants}
    for v in variants.values():
        v.update(
            status="ok",
            images_per_second=None,
            best_round=None,
            per_round=[],
            step_seconds=[],
            forward_flops_per_image=None,
            training_gflops=None,
            fraction_of_ceiling=None,
        )
        if v["side"] == "torch" and torch_info["python"] is None:
            v["status"] = torch_info["reason"]
    runnable = [name for name, v in variants.items() if v["status"] == "ok"]
    orders = []
    for r in range(args.rounds):
        shift = r % len(runnable) if runnable else 0
        order = runnable[shift:] + runnable[:shift]
        orders.append(order)
        for name in variants:
            variants[name]["per_round"].append(None)
            variants[name]["step_seconds"].append(None)
        for name in order:
            v = variants[name]
            if v["status"] != "ok":  # failed in an earlier round: not run again
                continue
            command = child_command(name, pair, args, torch_info["python"])
            result, why = run_child(command, f"{pair} {name}", args.child_timeout)
            if result is None:
                v["status"] = f"failed: {why}"
                continue
            durations = result.pop("step_seconds")
            v["per_round"][r] = _finite(batch / statistics.median(durations))
            v["step_seconds"][r] = durations
            v["forward_flops_per_image"] = 2 * result.pop("multiply_adds_per_image")
            v.setdefault("child", []).append(result)
    for v in variants.values():
        measured = [s for s in v["per_round"] if s is not None]
        if v["status"] != "ok" or not measured:
            continue
        v["images_per_second"] = statistics.median(measured)
        v["best_round"] = max(measured)
        v["training_gflops"] = _finite(3 * v["forward_flops_per_image"] * v["images_per_second"] / 1e9)
        if ceiling:
            v["fraction_of_ceiling"] = _divide(v["training_gflops"], ceiling["best"].get(v["precision"]))
    ratios = ratio_table(variants, args.rounds)
    for name, v in variants.items():
        if v["status"] == "ok":
            speeds = f"{v['images_per_second']:9.1f} {v['best_round']:9.1f}"
            gflops = f"{v['training_gflops']:9.1f}" if v["training_gflops"] else f"{'-':>9s}"
            share = f"{100 * v['fraction_of_ceiling']:7.1f}%" if v["fraction_of_ceiling"] else f"{'-':>8s}"
            print(f"{pair:9s} {batch:5d}  {name:28s} {speeds} {gflops} {share}", flush=True)
        else:
            print(f"{pair:9s} {batch:5d}  {name:28s} {v['status']}", flush=True)
    for label, r in ratios.items():
        shown = f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]" if r else "n/a (a side not measured)"
        print(f"{pair:9s} ratio {label:56s} {shown}", flush=True)
    return {
        "batch_size": batch,
        "image_size": config["image_size"],
        "steps": steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "orders": orders,
        "variants": variants,
        "ratios": ratios,
    }


def ratio_table(variants, rounds):
    """Per-round ratios: ours-best / torch-best, then each of our variants over
    each torch variant of the same precision. A variant that failed in any
    round counts in none."""

    def speed(name, r):
        v = variants[name]
        return v["per_round"][r] if v["status"] == "ok" else None

    def best(side, r):
        speeds = [(speed(n, r), n) for n, v in variants.items() if v["side"] == side and speed(n, r) is not None]
        return max(speeds) if speeds else (None, None)

    per_round, winners = [], []
    for r in range(rounds):
        (ours, ours_name), (theirs, their_name) = best("ours", r), best("torch", r)
        per_round.append(_divide(ours, theirs))
        winners.append([ours_name, their_name])
    ratios = {"ours_best/torch_best": _ratio(per_round)}
    if ratios["ours_best/torch_best"]:
        ratios["ours_best/torch_best"]["best_variants"] = winners
    for ours in (n for n, v in variants.items() if v["side"] == "ours"):
        for theirs in (n for n, v in variants.items() if v["side"] == "torch"):
            if variants[ours]["precision"] == variants[theirs]["precision"]:
                ratios[f"{ours}/{theirs}"] = _ratio([_divide(speed(ours, r), speed(theirs, r)) for r in range(rounds)])
    return ratios


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs="+", choices=list(PAIRS), default=list(PAIRS), help="which networks")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="which variants (default all six)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated rounds, one child per variant each (default 3)"
    )
    parser.add_argument("--steps", type=int, help="timed steps per child (default 10/5/3 for resnet20/56/50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per child before timing (default 3)")
    parser.add_argument(
        "--batch-size", type=int, help="override the pair's batch (128 for resnet20/56, 16 for resnet50)"
    )
    parser.add_argument(
        "--torch-python",
        help="interpreter with torch and torchvision (default: $TORCH_PYTHON, "
        "else ~/torch-venv/bin/python if it exists, else this one if it imports torch)",
    )
    parser.add_argument("--no-torch", action="store_true", help="measure our variants alone")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the conv / matmul ceiling")
    parser.add_argument(
        "--ceiling-conv",
        nargs=3,
        type=int,
        default=list(CEILING_CONV),
        metavar=("BATCH", "SIZE", "CHANNELS"),
        help="the ceiling's 3x3 convolution (default 32 28 256)",
    )
    parser.add_argument(
        "--ceiling-matmul",
        type=int,
        default=CEILING_MATMUL,
        metavar="N",
        help="the ceiling's N^3 matmul (default 2048)",
    )
    parser.add_argument("--child-timeout", type=float, default=1800, help="seconds before a child counts as failed")
    parser.add_argument("--json", help="also write the results to this JSON file (strict JSON, unknowns null)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_counts(args, ("rounds", "steps", "warmup", "batch_size", "ceiling_matmul"))
    if min(args.ceiling_conv) < 1:
        raise SystemExit(f"error: --ceiling-conv values must be at least 1, got {args.ceiling_conv}")
    if args.child:
        return child_main(args)

    import keras
    import tensorflow as tf

    from benchmarks.model_throughput import describe_cpu
    from trainers.core.files import write_json_atomic

    torch_info = find_torch(args)
    machine = describe_cpu()
    torch_text = "torch not run"
    if torch_info["python"]:
        torch_text = (
            f"torch {torch_info['version']} ({torch_info['python']}, {torch_info['default_threads']} "
            f"threads by default, capability {torch_info['cpu_capability']})"
        )
    print(f"{machine}, {torch_text}, TensorFlow {tf.__version__}, keras {keras.__version__}", flush=True)
    if torch_info["python"] is None and not args.no_torch:
        print(
            f"torch is not available ({'; '.join(torch_info['tried'])}): our variants alone; to compare, install it "
            f"in a separate venv: {INSTALL_HINT}",
            flush=True,
        )
    env = {key: os.environ[key] for key in RECORDED_ENV if key in os.environ}
    ceiling, ceiling_status = None, "not run: --no-ceiling"
    if not args.no_ceiling:
        command = [
            sys.executable,
            "-m",
            "benchmarks.peer_torch",
            "--child",
            "ceiling",
            "--ceiling-conv",
            *map(str, args.ceiling_conv),
            "--ceiling-matmul",
            str(args.ceiling_matmul),
        ]
        ceiling, why = run_child(command, "ceiling", args.child_timeout)
        ceiling_status = "ok" if ceiling else f"failed: {why}"
        if ceiling:
            for precision in ("bfloat16", "float32"):
                print(
                    f"ceiling {precision:8s}: conv {ceiling['conv'][precision]:8.1f}  matmul "
                    f"{ceiling['matmul'][precision]:8.1f}  -> {ceiling['best'][precision]:8.1f} GFLOP/s",
                    flush=True,
                )
    print(f"{'pair':9s} {'batch':>5s}  {'variant':28s} {'img/s med':>9s} {'best':>9s} {'GFLOP/s':>9s} {'%ceil':>8s}")
    results = {
        "machine": machine,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "torch": torch_info,
        "env": env,
        "cpu_count": os.cpu_count(),
        "ceiling": ceiling,
        "ceiling_status": ceiling_status,
        "pairs": {pair: run_pair(pair, args, torch_info, ceiling) for pair in args.pair},
    }
    json.dumps(results, allow_nan=False)  # strict JSON: raises on a NaN or infinity that slipped through
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
