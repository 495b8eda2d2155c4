import functools

import trainers  # noqa: F401  (first: TensorFlow starts quietly, on the kernels every command uses)
import keras
import pytest

import resnet_keras

# Small inputs that still exercise every stage: 2x2 ImageNet and 4x4 CIFAR final maps.
SMALL_SIZE = {"imagenet": 64, "cifar": 16}


@functools.cache
def _build(name, size=None, **kwargs):
    spec = resnet_keras.resolve_spec(name)
    input_shape = None if size is None else (size, size, 3)
    return resnet_keras.get_model(name, num_classes=spec.default_num_classes, input_shape=input_shape, **kwargs)


@pytest.fixture(scope="session")
def build():
    """Builds (once per session) a network by name with the given options.
    ``size="small"`` picks a small input for the network's family."""

    def _get(name, size=None, **kwargs):
        if size == "small":
            size = SMALL_SIZE[resnet_keras.resolve_spec(name).family]
        return _build(name, size, **kwargs)

    return _get


@pytest.fixture
def float32_policy():
    """Restores the global dtype policy after a test that changes it."""
    previous = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(previous)


@pytest.fixture(autouse=True)
def _dtype_policy_left_as_found():
    """Fails a test that leaves the global dtype policy changed, and puts it
    back, so that every later test in the process builds in float32. (A leak
    shows only where ``--precision auto`` picks bf16, as on CPUs with bf16
    instructions, and then breaks tests far from its cause.)"""
    before = keras.config.dtype_policy().name
    yield
    after = keras.config.dtype_policy().name
    if after != before:
        keras.config.set_dtype_policy(before)
        pytest.fail(f"the test left the global dtype policy at {after} (it found {before})")


# The test files that take longest (`python -m pytest --durations=0`, summed per file), longest first. With
# `--dist loadfile` each xdist worker takes the next whole file when it is nearly done; handing out the long files
# first lets the short ones fill the gaps, so the two workers end together instead of one running a long file alone
# at the end (xdist's own order, by the number of tests in a file, put these last; addopts turns it off).
LONGEST_FIRST = (
    "test_distributed.py",
    "test_fit.py",
    "test_tune.py",
    "test_export.py",
    "test_tweaks.py",
    "test_compat.py",
    "test_realdata_imagenette.py",
    "test_responses.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
