"""Figure 7's layer responses: which layers, and their standard deviations
against a direct computation."""

import keras
import numpy as np
import pytest

import resnet_keras
from trainers import responses


def _randomize_bn(model, seed=0):
    # Away from initial values, so that BN's offsets and scales matter.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, gamma.shape), rng.normal(0, 1, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, var.shape)])  # fmt: skip


@pytest.mark.parametrize("arch, shortcut", [("resnet8", "B"), ("plain8", None)])
def test_response_layers_are_the_bns_after_3x3_convolutions(arch, shortcut):
    model = resnet_keras.get_model(arch, num_classes=10, **({"shortcut": shortcut} if shortcut else {}))
    names = responses.response_layers(model)
    # conv1, then two 3x3 layers in each of the 3 stages' one block; the 1x1 projection's BN is not one.
    assert len(names) == 7 and names[0] == "conv1_bn"
    assert all(model.get_layer(n).__class__.__name__ == "BatchNormalization" for n in names)
    assert not any("_0_" in n for n in names)


def test_response_std_matches_a_direct_computation_at_any_batch_size():
    model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3))
    _randomize_bn(model)
    images = np.random.default_rng(1).uniform(0, 255, (10, 16, 16, 3)).astype("float32")
    names = responses.response_layers(model)
    batched = responses.response_stds(model, [images[:3], images[3:7], images[7:]])
    whole = responses.response_stds(model, [(images, np.zeros(10))])
    for name in names:
        out = keras.Model(model.input, model.get_layer(name).output)(images, training=False)
        out = np.asarray(keras.ops.convert_to_numpy(out), np.float64)
        direct = out.reshape(-1, out.shape[-1]).std(axis=0).mean()
        assert batched[name] == pytest.approx(direct, rel=1e-6)
        assert whole[name] == pytest.approx(direct, rel=1e-6)
    assert len(set(round(v, 6) for v in batched.values())) == len(names)  # layers differ
