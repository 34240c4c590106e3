"""What training writes to TensorBoard besides Keras' scalars: a few example cutouts, and the network's graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from realfake.shards.shardset import ShardSet, load_shard


def composite(x, channels, stats, bands=("z", "r", "g")):
    """RGB (z, r, g) asinh composites in [0, 1] of cutouts ``x`` (N, S, S, C)."""
    planes = []
    for b in bands:
        c = list(channels).index(b)
        v = np.arcsinh((x[..., c] - stats[b]["median"]) / stats[b]["scale"])
        planes.append(np.clip((v + 1.0) / (np.arcsinh(50.0) + 1.0), 0, 1))
    return np.stack(planes, axis=-1).astype(np.float32)


def log_example_images(log_dir, shards: ShardSet, channels, stats, n: int) -> None:
    """A few real and fake g/r/z composites of the first shard of ``shards`` (the training split), once, under
    ``examples/``."""
    import tensorflow as tf

    x_path, y_path = shards.x[0], shards.y[0]
    x, y = load_shard(x_path, mmap_mode="r"), load_shard(y_path)
    if not {"g", "r", "z"} <= set(channels):
        return
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "examples"))
    with writer.as_default():
        for label, name in ((0, "real"), (1, "fake")):
            idx = np.flatnonzero(y == label)[:n]
            if len(idx):
                tf.summary.image(f"examples/{name}", composite(np.asarray(x[idx]), channels, stats), step=0,
                                 max_outputs=n,
                                 description=f"{name} cutouts of {x_path.name}: z, r, g as R, G, B (asinh)")
    writer.close()


def log_graph(log_dir, model, shape) -> None:
    """The network's forward graph, for TensorBoard's graph dashboard (Keras 3 writes no graph of its own)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec((None,) + tuple(shape), tf.float32)).graph
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "train"))
    with writer.as_default():
        tf.summary.graph(graph)
    writer.close()
