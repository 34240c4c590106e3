"""Shards to a seeded ``tf.data`` pipeline: every shard streamed, never the whole set in memory."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .shards import load_shard, shard_files


def _load_pair(x_path, y_path):
    x = load_shard(x_path.decode(), mmap_mode="r")
    y = load_shard(y_path.decode())
    return np.ascontiguousarray(x), y.astype(np.int32)


def dataset(shard_dir, split: str, batch_size: int, example_shape, shuffle_buffer: int = 0, seed: int = 1,
            cycle_length: int = 2) -> tf.data.Dataset:
    """Batches of (cutout, label) from all shards of ``split``.

    Shards are read by ``cycle_length`` interleaved readers; with a shuffle
    buffer the shard order and examples are reshuffled each epoch from
    ``seed``, deterministically.
    """
    pairs = shard_files(shard_dir, split)
    if not pairs:
        raise FileNotFoundError(f"no {split} shards (x{split}_N.npy) in {shard_dir}")
    files = tf.data.Dataset.from_tensor_slices(([str(x) for x, _ in pairs], [str(y) for _, y in pairs]))
    if shuffle_buffer:
        files = files.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)

    def read(x_path, y_path):
        x, y = tf.numpy_function(_load_pair, [x_path, y_path], [tf.float32, tf.int32], stateful=False)
        x.set_shape((None,) + tuple(example_shape))
        y.set_shape((None,))
        return tf.data.Dataset.from_tensor_slices((x, y))

    ds = files.interleave(read, cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def example_shape(shard_dir, split: str = "train"):
    x, _ = shard_files(shard_dir, split)[0]
    return load_shard(x, mmap_mode="r").shape[1:]
