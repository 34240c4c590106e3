"""Networks. ``build_model(cfg, stats)`` only builds a Keras model; no data, no training.

The input transformation is the model's first layers, built from the
normalisation statistics written with the shards, so nobody applying the
saved model can normalise wrongly: images are scaled by their robust sigma
and asinh-stretched (or left linear), inverse variances scaled by their
median (or its square root, or log). It and the final softmax compute in
float32 whatever the precision policy (mixed precision on GPUs).

The metric and learning-rate schedule used by training are defined here too,
registered, so that ``load_model`` finds them in a saved model's compile config.
"""

from __future__ import annotations

import math

from realfake.training.devices import require_tensorflow

require_tensorflow()  # Keras' backend here
import keras  # noqa: E402
from keras import layers  # noqa: E402


IMAGE_SCALINGS = ("asinh", "linear")
IVAR_SCALINGS = ("median", "sqrt", "log")


@keras.saving.register_keras_serializable(package="realfake")
class InputTransform(layers.Layer):
    """Per-channel scaling with the training split's statistics.

    Images: ``asinh((x - median) / scale)`` (``image="asinh"``) or ``(x - median) / scale``
    (``"linear"``). Inverse variances, ``r = x / median``: ``r`` (``ivar="median"``),
    ``sqrt(r)`` (``"sqrt"``, proportional to 1/sigma) or ``log(1 + r)`` (``"log"``).
    """

    def __init__(self, medians, scales, is_ivar, image="asinh", ivar="median", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if image not in IMAGE_SCALINGS or ivar not in IVAR_SCALINGS:
            raise ValueError(f"image scaling must be one of {IMAGE_SCALINGS} and ivar scaling one of {IVAR_SCALINGS}")
        self.medians, self.scales, self.is_ivar = list(medians), list(scales), list(is_ivar)
        self.image, self.ivar = image, ivar

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        med = keras.ops.convert_to_tensor(self.medians, dtype=x.dtype)
        scale = keras.ops.convert_to_tensor(self.scales, dtype=x.dtype)
        ivar = keras.ops.convert_to_tensor(self.is_ivar, dtype="bool")
        img = (x - med) / scale
        if self.image == "asinh":
            img = keras.ops.arcsinh(img)
        iv = x / keras.ops.where(med > 0, med, scale)
        if self.ivar == "sqrt":
            iv = keras.ops.sqrt(keras.ops.maximum(iv, 0.0))
        elif self.ivar == "log":
            iv = keras.ops.log1p(keras.ops.maximum(iv, 0.0))
        return keras.ops.where(ivar, iv, img)

    def get_config(self):
        return dict(super().get_config(), medians=self.medians, scales=self.scales, is_ivar=self.is_ivar,
                    image=self.image, ivar=self.ivar)


def input_transform(channels, stats, scaling: dict | None = None) -> InputTransform:
    scaling = scaling or {}
    return InputTransform(
        medians=[stats[c]["median"] for c in channels],
        scales=[stats[c]["scale"] for c in channels],
        is_ivar=[c.startswith("ivar") for c in channels],
        image=scaling.get("image", "asinh"),
        ivar=scaling.get("ivar", "median"),
        name="input_transform",
    )


def lenet(x, cfg):
    """The reference CNN: three 7x7 convolutions (18/36/54 maps), each with stride-2 average pooling."""
    for filters in cfg["filters"]:
        x = layers.Conv2D(filters, cfg["kernel_size"], padding="same", activation="relu")(x)
        x = layers.AveragePooling2D(pool_size=cfg["pool_size"], strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    return layers.Dense(cfg["dense"], activation="relu")(x)


def lenet_bn(x, cfg):
    """A LeNet-like network that trains in minutes on a CPU: the central ``crop`` pixels (the galaxy and its
    surroundings), then 3x3 convolutions each with batch normalisation and ReLU, 2x2 max pooling between them,
    dropout and a small dense layer. On the synthetic release it learns where the reference network, at the same
    budget, stays at chance (docs/training.md)."""
    size = x.shape[1]
    if cfg["crop"] and cfg["crop"] < size:
        x = layers.Cropping2D((size - cfg["crop"]) // 2)(x)
    for i, filters in enumerate(cfg["filters"]):
        x = layers.Conv2D(filters, cfg["kernel_size"], padding="same", use_bias=False)(x)
        # synchronized: several workers normalise with the statistics of the whole global batch, so that their
        # moving averages, and the model they save, stay one (a no-op on one device)
        x = layers.BatchNormalization(synchronized=True)(x)
        x = layers.ReLU()(x)
        if i < len(cfg["filters"]) - 1:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    if cfg["dropout"]:
        x = layers.Dropout(cfg["dropout"])(x)
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


ARCHITECTURES = {"lenet": lenet, "lenet_bn": lenet_bn, "resnet": resnet}


def build_model(model_cfg: dict, input_shape, channels, stats) -> keras.Model:
    name = model_cfg["name"]
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name must be one of {sorted(ARCHITECTURES)}, not {name!r}")
    if name not in model_cfg:
        raise ValueError(f"model.name is {name!r} but the config has no model.{name} block with its sizes")
    inputs = keras.Input(shape=tuple(input_shape), name="cutout")
    x = input_transform(channels, stats, model_cfg.get("input_scaling"))(inputs)
    x = ARCHITECTURES[name](x, model_cfg[name])
    # float32 softmax: probabilities near 0 and 1 survive a mixed-precision policy
    outputs = layers.Dense(2, activation="softmax", name="p_real_fake", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="realfake")
class FakeAUC(keras.metrics.AUC):
    """ROC AUC of P(fake) (the second softmax output) against integer labels (real = 0, fake = 1)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred[..., 1], sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="realfake")
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate per optimizer step: constant, cosine decay to 0, or step decay; optional linear warm-up.

    A function of the optimizer's step count only, which a checkpoint holds, so a
    resumed run follows the same curve. ``step_every`` (steps) and ``factor``: step decay.
    """

    def __init__(self, base: float, kind: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
                 step_every: int = 1, factor: float = 0.1):
        if kind not in ("constant", "cosine", "step"):
            raise ValueError(f"learning-rate schedule must be constant, cosine or step, not {kind!r}")
        self.base, self.kind, self.total_steps = float(base), kind, max(1, int(total_steps))
        self.warmup_steps, self.step_every, self.factor = int(warmup_steps), max(1, int(step_every)), float(factor)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        lr = keras.ops.convert_to_tensor(self.base, "float32")
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            lr = lr * 0.5 * (1.0 + keras.ops.cos(math.pi * t))
        elif self.kind == "step":
            lr = lr * keras.ops.power(self.factor, keras.ops.floor(step / self.step_every))
        if self.warmup_steps:
            lr = lr * keras.ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def get_config(self):
        return dict(base=self.base, kind=self.kind, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    step_every=self.step_every, factor=self.factor)


def load_model(path) -> keras.Model:
    """Load a saved ``.keras`` model; importing this module registers :class:`InputTransform`."""
    return keras.models.load_model(path)
