"""Where a network looks: Grad-CAM (Selvaraju et al., "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).

The class activation map of class ``c`` is the last stage's feature maps
``A^k``, each weighted by the spatial mean of the gradient of the class logit
``y^c`` with respect to it, summed over ``k`` and passed through a ReLU (only the
evidence *for* the class is kept). The last stage's output is the input of the
``avg_pool`` layer every network of :func:`resnet_keras.get_model` ends with, so
the map has that stage's resolution (input / 32 for the ImageNet networks, / 4
for the CIFAR ones) and is resized to the input.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

POOL_LAYER = "avg_pool"


def feature_layer_output(model: keras.Model, layer: str | None = None):
    """The tensor Grad-CAM explains with: ``layer``'s output, or by default the
    last stage's output (the input of the ``avg_pool`` head)."""
    names = {lay.name for lay in model.layers}
    if layer is not None:
        if layer not in names:
            raise ValueError(f"{model.name} has no layer {layer!r}")
        tensor = model.get_layer(layer).output
    elif POOL_LAYER in names:
        tensor = model.get_layer(POOL_LAYER).input
    else:
        raise ValueError(
            f"{model.name} has no {POOL_LAYER!r} layer, the global pooling every network of this library ends "
            "with; name the feature layer to explain with (layer=...)"
        )
    if len(tensor.shape) != 4:
        raise ValueError(f"Grad-CAM needs a feature map (batch, height, width, channels); got shape {tensor.shape}")
    return tensor


def grad_cam(model: keras.Model, images, class_index=None, *, layer: str | None = None):
    """Grad-CAM heat maps of ``model`` for a batch of ``images`` (N, H, W, 3), as
    the model takes them (its normalization is inside it).

    ``class_index``: one class for all images, one per image, or None for each
    image's predicted class. Returns ``(heat, classes, probabilities)``: heat
    maps (N, H, W) in [0, 1] (each divided by its own maximum; all zero where no
    region raises the class), the explained class of each image, and the
    softmax of the logits (N, classes)."""
    images = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    if images.shape.rank != 4:
        raise ValueError(f"images must be a batch (N, H, W, C); got shape {tuple(images.shape)}")
    explainer = keras.Model(model.inputs, [feature_layer_output(model, layer), model.outputs[0]])
    with tf.GradientTape() as tape:
        features, logits = explainer(images, training=False)
        features = tf.cast(features, tf.float32)  # bf16 gradients are too coarse to weigh channels by
        logits = tf.cast(logits, tf.float32)
        if class_index is None:
            classes = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            classes = tf.broadcast_to(tf.constant(class_index, dtype=tf.int32), tf.shape(logits)[:1])
        score = tf.gather(logits, classes, axis=1, batch_dims=1)
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    heat = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0]
    # Softmax only where the model gives logits; a model already ending in a softmax is kept as it is.
    activation = getattr(model.layers[-1], "activation", None)
    gives_probabilities = activation is not None and getattr(activation, "__name__", "") == "softmax"
    probabilities = logits if gives_probabilities else tf.nn.softmax(logits, axis=-1)
    return np.clip(heat.numpy(), 0.0, 1.0), classes.numpy(), probabilities.numpy()
