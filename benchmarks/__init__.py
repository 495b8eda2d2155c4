"""Speed measurements, reported in docs/benchmarks.md. Only the standard library
here: benchmarks/peer_torch.py runs parts of itself under a PyTorch interpreter
that has neither TensorFlow nor this project."""


def check_counts(args, names, minimum=1):
    """Exits with one line when a count flag (``None`` = its default) is below ``minimum``."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least {minimum}, got {value}")
