"""Input pipelines: the synthetic dataset, the paper's augmentation and
evaluation views, and the ImageNet-style pipeline on TFDS mock data."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from trainers.core import data


def _info(name="synthetic", style="cifar", size=32, classes=10, train=256, val=0, test=64):
    return data.DataInfo(
        name=name,
        style=style,
        image_size=size,
        num_classes=classes,
        class_names=[],
        num_train=train,
        num_val=val,
        num_test=test,
        test_split="test" if name == "synthetic" else "validation",
        data_dir=None,
        synthetic=name == "synthetic",
    )


def _find_window(padded, out, size=32, pad=4):
    """(flipped, dy, dx) of the window of ``padded`` that ``out`` is (or whose
    mirror it is); None if it is none."""
    for flipped in (False, True):
        view = out[:, ::-1] if flipped else out
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if np.array_equal(padded[dy : dy + size, dx : dx + size], view):
                    return (flipped, dy, dx)
    return None


def test_synthetic_is_deterministic_from_its_seed_at_any_size():
    a_images, a_labels = data.synthetic_arrays(50, 24, 7, seed=3)
    b_images, b_labels = data.synthetic_arrays(50, 24, 7, seed=3)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert a_images.shape == (50, 24, 24, 3) and a_images.dtype == np.uint8
    assert set(a_labels) <= set(range(7)) and len(set(a_labels)) > 3
    other, _ = data.synthetic_arrays(50, 24, 7, seed=4)
    assert not np.array_equal(a_images, other)
    test, _ = data.synthetic_arrays(50, 24, 7, seed=3, offset=1)  # the test split: other examples
    assert not np.array_equal(a_images, test)


def test_synthetic_classes_are_not_told_apart_by_mean_colour_alone():
    """Learnable, but not trivially: a nearest-class-mean-colour classifier
    stays far from what the trainer's tests show a small ResNet reaching."""
    images, labels = data.synthetic_arrays(2000, 32, 10, seed=0)
    colour = images.reshape(len(images), -1, 3).mean(axis=1)
    centres = np.stack([colour[labels == c].mean(axis=0) for c in range(10)])
    guess = np.argmin(((colour[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (guess == labels).mean() < 0.5


def test_cifar_augmentation_is_pad_crop_flip():
    image = tf.reshape(tf.range(32 * 32 * 3, dtype=tf.int32) % 251, (32, 32, 3))
    image = tf.cast(image, tf.uint8)
    padded = np.pad(image.numpy(), ((4, 4), (4, 4), (0, 0))).astype(np.float32)
    flips = offsets = 0
    for index in range(40):
        out = data.train_view(image, index, 7, "cifar", 32).numpy()
        assert out.shape == (32, 32, 3) and out.dtype == np.float32
        # The output is a 32x32 window of the zero-padded image, or its mirror.
        found = _find_window(padded, out)
        assert found is not None
        flips += found[0]
        offsets += found[1:] != (4, 4)
    assert 8 < flips < 32 and offsets > 20
    # Same (seed, index): same view, whatever the order of calls.
    np.testing.assert_array_equal(data.train_view(image, 3, 7, "cifar", 32), data.train_view(image, 3, 7, "cifar", 32))
    # Evaluation: the original image.
    np.testing.assert_array_equal(data.eval_view(image, "cifar", 32).numpy(), image.numpy().astype(np.float32))


def test_cifar_pipeline_pads_crops_and_flips_whole_batches():
    """The training pipeline's batched CIFAR augmentation: every image is a
    32x32 window of its zero-padded original or the window's mirror, offsets
    cover all 9 x 9 positions, about half are flipped, and the batch view on
    given draws is exactly pad-crop-flip."""
    images, _ = data.synthetic_arrays(64, 32, 10, seed=3)  # the split the pipeline reads with seed 3
    info = _info(train=64, size=32)
    flips, positions = 0, set()
    batch, _ = next(iter(data.train_pipeline(info, 64, seed=3)))
    # The batch is shuffled: look for each output's source among all images.
    padded = {i: np.pad(img, ((4, 4), (4, 4), (0, 0))).astype(np.float32) for i, img in enumerate(images)}
    for out in batch.numpy():
        found = next((w for w in map(lambda p: _find_window(p, out), padded.values()) if w), None)
        assert found is not None
        flips += found[0]
        positions.add(found[1:])
    assert 16 < flips < 48 and len(positions) > 30
    u = np.array([[0.0, 0.999, 0.9], [0.5, 0.2, 0.1]], np.float32)
    out = data.cifar_batch_view(tf.constant(images[:2]), tf.constant(u), 32).numpy()
    p0, p1 = padded[0], padded[1]
    np.testing.assert_array_equal(out[0], p0[0:32, 8:40])  # dy 0, dx 8, not flipped
    np.testing.assert_array_equal(out[1], p1[4:36, 1:33][:, ::-1])  # dy 4, dx 1, flipped


def test_imagenet_scale_range_and_colour_noise():
    assert data.scale_range(224) == (256, 480)
    assert data.scale_range(64) == (73, 137)
    grey = tf.fill((80, 120, 3), tf.constant(128, tf.uint8))
    shifts = []
    for index in range(200):
        out = data.train_view(grey, index, 0, "imagenet", 64).numpy()
        assert out.shape == (64, 64, 3)
        # A uniform image stays uniform: what changes it is the PCA colour shift alone.
        np.testing.assert_allclose(out, np.broadcast_to(out[0, 0], out.shape), atol=1e-3)
        shifts.append(out[0, 0] - 128)
    shifts = np.array(shifts)
    # shift = eigvec @ (alpha * eigval) * 255 with alpha ~ N(0, 0.1): per channel, std
    # sqrt(sum_j (eigvec_cj * eigval_j * 0.1 * 255)^2), about 3.2 for each channel.
    expected = np.sqrt(((data.PCA_EIGVEC * data.PCA_EIGVAL * data.PCA_STD * 255) ** 2).sum(axis=1))
    np.testing.assert_allclose(shifts.std(axis=0), expected, rtol=0.25)
    assert np.all(np.abs(shifts.mean(axis=0)) < 1.0)


def test_random_resized_crop_takes_35_to_100_percent_at_3_4_to_4_3():
    """Pixels that encode their own row and column show which box was cut."""
    rows, cols = np.meshgrid(np.arange(100), np.arange(160), indexing="ij")
    image = tf.constant(np.stack([rows * 2, cols * 1.5, np.zeros_like(rows)], -1).astype(np.uint8))
    areas, flips = [], 0
    for index in range(60):
        out = data.train_view(image, index, 3, "imagenet", 32, augment="rrc").numpy()
        assert out.shape == (32, 32, 3) and out.dtype == np.float32
        np.testing.assert_array_equal(out, data.train_view(image, index, 3, "imagenet", 32, augment="rrc"))
        # The box's height and width in source pixels, from the extreme rows and columns.
        h = (out[..., 0].max() - out[..., 0].min()) / 2 + 1
        w = (out[..., 1].max() - out[..., 1].min()) / 1.5 + 1
        areas.append(h * w / (100 * 160))
        assert 0.75 * 0.9 <= w / h <= 4 / 3 * 1.1, (index, h, w)
        flips += out[0, 0, 1] > out[0, -1, 1]  # columns decreasing: mirrored
    assert 0.35 * 0.9 <= min(areas) and max(areas) <= 1.0 + 1e-6
    assert max(areas) - min(areas) > 0.3  # the area varies from crop to crop
    assert 15 <= flips <= 45
    with pytest.raises(ValueError, match="augment"):
        data.train_view(image, 0, 3, "imagenet", 32, augment="mixup")


def test_decoded_size_estimate_decides_the_in_memory_cache():
    from types import SimpleNamespace

    def builder(shape, num_bytes=0, examples=0):
        split = SimpleNamespace(num_bytes=num_bytes, num_examples=examples)
        return SimpleNamespace(
            info=SimpleNamespace(features={"image": SimpleNamespace(shape=shape)}, splits={"train": split})
        )

    assert data.decoded_bytes(builder((32, 32, 3)), 50_000) == 50_000 * 32 * 32 * 3
    # Imagenette 160 px: 75.7 MB of JPEG for 9,469 images -> about 1.2 GB estimated, cached.
    imagenette = builder((None, None, 3), 75_662_887, 9469)
    assert 1.1e9 < data.decoded_bytes(imagenette, 9469) < data.CACHE_LIMIT_BYTES
    # ImageNet (about 140 GB of JPEG): not cached; nothing known: not cached.
    assert data.decoded_bytes(builder((None, None, 3), 140 * 10**9, 1_281_167), 1_281_167) > data.CACHE_LIMIT_BYTES
    assert data.decoded_bytes(builder((None, None, 3)), 10) == float("inf")


@pytest.mark.parametrize(
    "name, classes, augment", [("imagenette/160px-v2", 10, "rrc"), ("imagenet2012", 1000, "scale")]
)
def test_imagenet_style_pipeline_on_tfds_mock_data(name, classes, augment):
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        info = _info(name, "imagenet", 64, classes, train=6, test=6)
        images, labels = next(iter(data.train_pipeline(info, batch_size=3, seed=0, augment=augment)))
        assert images.shape == (3, 64, 64, 3) and images.dtype == tf.float32
        assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255
        assert labels.dtype == tf.int64 and all(0 <= int(y) < classes for y in labels)
        images, labels = next(iter(data.eval_pipeline(info, "test", batch_size=4)))
        assert images.shape == (4, 64, 64, 3) and images.dtype == tf.float32
        crops, _ = next(iter(data.ten_crop_pipeline(info, "test", batch_size=2)))
        assert crops.shape == (2, 10, 64, 64, 3)
        # The last five crops are the first five mirrored.
        np.testing.assert_allclose(crops[:, 5:].numpy(), crops[:, :5].numpy()[:, :, :, ::-1], atol=1e-4)
        # Test-time flip: the centre crop, then its mirror image.
        views, _ = next(iter(data.flip_pipeline(info, "test", batch_size=4)))
        assert views.shape == (4, 2, 64, 64, 3)
        np.testing.assert_array_equal(views[:, 0].numpy(), images.numpy())
        np.testing.assert_array_equal(views[:, 1].numpy(), images.numpy()[:, :, ::-1])


def test_ten_crop_takes_corners_and_centre_of_the_resized_image():
    image = tf.cast(tf.reshape(tf.range(73 * 100 * 3) % 256, (73, 100, 3)), tf.uint8)
    crops = data.ten_crop_views(image, 64).numpy()  # shorter side 73 = 256 * 64 / 224
    resized = tf.image.resize(tf.cast(image, tf.float32), (73, 100), antialias=True).numpy()
    np.testing.assert_allclose(crops[0], resized[:64, :64], atol=1e-3)
    np.testing.assert_allclose(crops[3], resized[-64:, -64:], atol=1e-3)
    np.testing.assert_allclose(crops[4], resized[4:68, 18:82], atol=1e-3)


def test_missing_dataset_names_itself_the_dir_and_the_fix(tmp_path):
    with pytest.raises(data.UserError) as info:
        data.describe("cifar10", data_dir=str(tmp_path), family="cifar", image_size=32, val_split=0.0, seed=0)
    message = str(info.value)
    assert "'cifar10' is not present in the data dir" in message and str(tmp_path) in message
    assert "--data-dir" in message and "TFDS_DATA_DIR" in message and "synthetic" in message


@pytest.mark.parametrize("workers, local_replicas", [(2, 1), (2, 2), (3, 1)])
def test_worker_shards_rebuild_the_global_batches(workers, local_replicas):
    """Each worker's pipeline keeps the per-replica batches of its own replicas
    (before augmentation), so the global batch of every iteration holds the
    images one process would use, augmented identically."""
    info = _info(train=120, size=16)
    replicas, per_replica = workers * local_replicas, 4
    whole = list(
        data.train_pipeline(info, replicas * per_replica, seed=5).take(12).as_numpy_iterator()
    )  # past one epoch
    shards = [
        list(
            data.train_pipeline(info, per_replica, seed=5, shard=(w, workers), chunks=replicas)
            .take(12 * local_replicas)
            .as_numpy_iterator()
        )
        for w in range(workers)
    ]
    for step, (images, labels) in enumerate(whole):
        # Replica r of worker w holds chunk w * local_replicas + r of the global batch.
        parts = [shards[w][step * local_replicas + r] for w in range(workers) for r in range(local_replicas)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)


def _pairs(info, which="train"):
    return [(image.numpy(), int(label)) for image, label in data.raw_dataset(info, which, seed=0).take(8)]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_jpeg_quality_re_encodes_every_image_once_before_use():
    import dataclasses

    plain = _info()
    originals = _pairs(plain)
    psnr = {}
    for quality in (90, 30):
        info = dataclasses.replace(plain, jpeg_quality=quality)
        recompressed = _pairs(info)
        assert [y for _, y in recompressed] == [y for _, y in originals]
        for (image, _), (original, _) in zip(recompressed, originals):
            assert image.dtype == np.uint8 and image.shape == original.shape
            np.testing.assert_array_equal(image, data.recompress_jpeg(tf.constant(original), quality).numpy())
        psnr[quality] = np.mean([_psnr(a, b) for (a, _), (b, _) in zip(recompressed, originals)])
    assert 10 < psnr[30] < psnr[90] < 60  # lossy, and more so at lower quality
    # The encoded-TFDS path (decode, then re-encode) as well.
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        mock = _info("imagenette/160px-v2", "imagenet", 64, 10, train=4, test=4)
        before, after = _pairs(mock), _pairs(dataclasses.replace(mock, jpeg_quality=50))
        for (image, _), (original, _) in zip(after, before):
            np.testing.assert_array_equal(image, data.recompress_jpeg(tf.constant(original), 50).numpy())
    with pytest.raises(data.UserError, match="--jpeg-quality 0"):
        data.describe("synthetic", data_dir=None, family="cifar", image_size=32, val_split=0.0, seed=0, jpeg_quality=0)
