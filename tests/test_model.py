"""The networks: the reference CNN exactly, a deeper option, the saved input transform, a smoke fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from pathlib import Path

from realfake.cutouts.brickfile import DEFAULT_CHANNELS

CONFIG = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
STATS = {c: {"median": 1.0 if c.startswith("ivar") else 0.0, "scale": 0.01} for c in DEFAULT_CHANNELS}


def test_reference_cnn_architecture():
    from keras import layers

    from realfake.training.model import build_model

    m = build_model(dict(CONFIG["model"], name="lenet"), (64, 64, 6), DEFAULT_CHANNELS, STATS)
    convs = [l for l in m.layers if isinstance(l, layers.Conv2D)]
    pools = [l for l in m.layers if isinstance(l, layers.AveragePooling2D)]
    assert [c.filters for c in convs] == [18, 36, 54]
    assert all(c.kernel_size == (7, 7) and c.strides == (1, 1) for c in convs)
    assert all(p.pool_size == (7, 7) and p.strides == (2, 2) for p in pools)
    assert [tuple(p.output.shape[1:3]) for p in pools] == [(32, 32), (16, 16), (8, 8)]
    dense = [l for l in m.layers if isinstance(l, layers.Dense)]
    assert [d.units for d in dense] == [64, 2]
    assert m.output.shape[-1] == 2


def test_default_lenet_bn_sees_the_central_crop_through_batch_normalised_3x3_convolutions():
    from keras import layers

    from realfake.training.model import build_model

    assert CONFIG["model"]["name"] == "lenet_bn"
    m = build_model(CONFIG["model"], (64, 64, 6), DEFAULT_CHANNELS, STATS)
    crop = [l for l in m.layers if isinstance(l, layers.Cropping2D)]
    assert len(crop) == 1 and tuple(crop[0].output.shape[1:3]) == (32, 32)
    convs = [l for l in m.layers if isinstance(l, layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(l, layers.BatchNormalization) for l in m.layers) == 3
    assert [tuple(p.output.shape[1:3]) for p in m.layers if isinstance(p, layers.MaxPooling2D)] == [(16, 16), (8, 8)]
    assert [d.units for d in m.layers if isinstance(d, layers.Dense)] == [32, 2]
    cfg = dict(CONFIG["model"])
    del cfg["lenet_bn"]
    with pytest.raises(ValueError, match="no model.lenet_bn block"):
        build_model(cfg, (64, 64, 6), DEFAULT_CHANNELS, STATS)


def test_resnet_option_builds():
    from realfake.training.model import build_model

    cfg = dict(CONFIG["model"], name="resnet", resnet=dict(filters=[8, 16], blocks_per_stage=1, dropout=0.2, dense=16))
    m = build_model(cfg, (64, 64, 6), DEFAULT_CHANNELS, STATS)
    assert m.output.shape[-1] == 2


def test_input_scaling_choices_and_mixed_precision_keep_float32_ends():
    import keras

    from realfake.training.model import InputTransform, build_model

    x = np.array([[[[0.03, 4.0]]]], np.float32)  # one pixel: an image value and an inverse variance
    for image, ivar, expected in (("asinh", "median", [np.arcsinh(3.0), 2.0]), ("linear", "sqrt", [3.0, np.sqrt(2.0)]),
                                  ("asinh", "log", [np.arcsinh(3.0), np.log(3.0)])):
        t = InputTransform([0.0, 2.0], [0.01, 1.0], [False, True], image=image, ivar=ivar)
        assert np.allclose(keras.ops.convert_to_numpy(t(x)).ravel(), expected, rtol=1e-5)
        assert InputTransform.from_config(t.get_config()).get_config() == t.get_config()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m = build_model(dict(CONFIG["model"], input_scaling={"image": "linear", "ivar": "sqrt"}), (64, 64, 6),
                        DEFAULT_CHANNELS, STATS)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert m.get_layer("input_transform").compute_dtype == "float32"
    assert {l.compute_dtype for l in m.layers if isinstance(l, keras.layers.Conv2D)} == {"float16"}
    assert m.get_layer("p_real_fake").compute_dtype == "float32" and m.output.dtype == "float32"


def test_smoke_fit_saves_a_model_that_reloads_with_its_input_transform(brick_files, tmp_path):
    from realfake.training.model import load_model
    from realfake.shards.build import build
    from realfake.training.train import fit

    build(brick_files, tmp_path / "shards", DEFAULT_CHANNELS, split_by="example", size=8, seed=1, validation_fraction=0.2,
          balance="brick")
    # these shards hold a single training batch: trace it
    cfg = {"model": CONFIG["model"], "train": dict(CONFIG["train"], epochs=1, profile_batches=[1, 1])}
    model = fit(tmp_path / "shards", tmp_path / "run" / "model.keras", cfg, threads=2)
    again = load_model(tmp_path / "run" / "model.keras")
    x = np.load(tmp_path / "shards" / "xtest_0.npy")[:8]
    assert np.allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), atol=1e-6)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["model"]["name"] == "lenet_bn" and "tensorflow-cpu" in run["packages"]
    history = (tmp_path / "run" / "history.csv").read_text()
    assert history.count("\n") == 2 and "val_loss" in history.splitlines()[0]
    assert list((tmp_path / "run" / "tensorboard").rglob("*.xplane.pb")), "profiler trace missing"
