"""Each work-around of trainers/compat.py: the Keras behaviour it answers
(which fails here when a Keras upgrade changes it) and the fix."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

SKIPPED_FIRST_BATCH = r"""
import json, sys
from trainers.common import split_cpu
split_cpu(2)  # two logical CPU devices, before TensorFlow starts
import keras, numpy as np, tensorflow as tf
import resnet_keras
from trainers import compat

from trainers import data

info = data.describe("synthetic", data_dir=None, family="cifar", image_size=16, val_split=0.0, seed=0,
                     synthetic_train=512)

def first_loss(strategy, patch):
    # The trainer's own input path: one pipeline per worker, per-replica batches.
    ds = data.distributed_train_data(strategy, info, 32, seed=0)
    with strategy.scope():
        model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3), seed=0, synchronized_bn=True)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if patch:
        compat.build_before_fit(model, strategy, (((32, 16, 16, 3), "float32"), ((32,), "int64")))
    return model.fit(ds, steps_per_epoch=4, epochs=1, verbose=0).history["loss"][0]

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
json.dump({"default": first_loss(tf.distribute.get_strategy(), False),
           "mirrored_unpatched": first_loss(mirrored, False),
           "mirrored_patched": first_loss(mirrored, True)}, open(sys.argv[1], "w"))
"""


def test_fit_under_mirrored_strategy_skips_the_first_batch_unless_built_first(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SKIPPED_FIRST_BATCH)
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(out.read_text())
    # With a learning rate of 0 the epoch's loss is the mean loss of the 4
    # batches it trained on. Unpatched, Keras 3.15 trains on batches 2-5, not 1-4:
    assert abs(losses["mirrored_unpatched"] - losses["default"]) > 1e-3, (
        "Keras no longer skips the first batch under MirroredStrategy: "
        "trainers/compat.build_before_fit may be retired"
    )
    # Built first, it trains on the first batch, as the default strategy does.
    assert abs(losses["mirrored_patched"] - losses["default"]) < 1e-5 * abs(losses["default"])
