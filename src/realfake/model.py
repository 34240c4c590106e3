"""Networks. ``build_model(cfg, stats)`` only builds a Keras model; no data, no training.

The input transformation is the model's first layers, built from the
normalisation statistics written with the shards, so nobody applying the
saved model can normalise wrongly: images are scaled by their robust sigma
and asinh-stretched, inverse variances scaled by their median.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="realfake")
class InputTransform(layers.Layer):
    """Per-channel ``asinh((x - median) / scale)`` for images, ``x / median`` for inverse variances."""

    def __init__(self, medians, scales, is_ivar, **kwargs):
        super().__init__(**kwargs)
        self.medians, self.scales, self.is_ivar = list(medians), list(scales), list(is_ivar)

    def call(self, x):
        med = keras.ops.convert_to_tensor(self.medians, dtype=x.dtype)
        scale = keras.ops.convert_to_tensor(self.scales, dtype=x.dtype)
        ivar = keras.ops.convert_to_tensor(self.is_ivar, dtype="bool")
        img = keras.ops.arcsinh((x - med) / scale)
        iv = x / keras.ops.where(med > 0, med, scale)
        return keras.ops.where(ivar, iv, img)

    def get_config(self):
        return dict(super().get_config(), medians=self.medians, scales=self.scales, is_ivar=self.is_ivar)


def input_transform(channels, stats) -> InputTransform:
    return InputTransform(
        medians=[stats[c]["median"] for c in channels],
        scales=[stats[c]["scale"] for c in channels],
        is_ivar=[c.startswith("ivar") for c in channels],
        name="input_transform",
    )


def lenet(x, cfg):
    """The reference CNN: three 7x7 convolutions (18/36/54 maps), each with stride-2 average pooling."""
    for filters in cfg["filters"]:
        x = layers.Conv2D(filters, cfg["kernel_size"], padding="same", activation="relu")(x)
        x = layers.AveragePooling2D(pool_size=cfg["pool_size"], strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    return layers.Dense(cfg["dense"], activation="relu")(x)


def resnet(x, cfg):
    """A small residual network with batch normalisation and dropout; sizes from the config."""
    x = layers.Conv2D(cfg["filters"][0], 3, padding="same", use_bias=False)(x)
    for stage, filters in enumerate(cfg["filters"]):
        for block in range(cfg["blocks_per_stage"]):
            stride = 2 if block == 0 and stage > 0 else 1
            shortcut = x
            y = layers.BatchNormalization()(x)
            y = layers.ReLU()(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(y)
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            y = layers.ReLU()(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            x = layers.Add()([shortcut, y])
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(cfg["dropout"])(x)
    return layers.Dense(cfg["dense"], activation="relu")(x)


ARCHITECTURES = {"lenet": lenet, "resnet": resnet}


def build_model(model_cfg: dict, input_shape, channels, stats) -> keras.Model:
    name = model_cfg["name"]
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name must be one of {sorted(ARCHITECTURES)}, not {name!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="cutout")
    x = input_transform(channels, stats)(inputs)
    x = ARCHITECTURES[name](x, model_cfg[name])
    outputs = layers.Dense(2, activation="softmax", name="p_real_fake")(x)
    return keras.Model(inputs, outputs, name=name)


def load_model(path) -> keras.Model:
    """Load a saved ``.keras`` model; importing this module registers :class:`InputTransform`."""
    return keras.models.load_model(path)
