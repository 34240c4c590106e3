"""Shards to ``tf.data`` pipelines: every shard streamed, never the whole set in memory.

Training reads an explicit *epoch*: the shard order and the shuffle buffer of
epoch ``k`` are seeded from ``(seed, k)`` only, so epoch ``k`` holds the same
batches in the same order whether it is the first epoch of a process or the
fifth, and a run resumed at epoch ``k``, batch ``b`` sees exactly the batches
an uninterrupted run would have seen from there (:func:`train_stream`).
"""

from __future__ import annotations

import numpy as np

from realfake.training.devices import require_tensorflow

require_tensorflow()
import tensorflow as tf  # noqa: E402

from realfake.shards.shardset import ShardSet, load_shard  # noqa: E402

# Epoch seeds: (seed * SEED_STRIDE + epoch) * 2 (+ 1 for the example shuffle); distinct for any epoch < SEED_STRIDE
SEED_STRIDE = 1_000_003


def _load(x_path, y_path, w_path):
    """One shard: pixels, int32 labels and float32 weights (ones when there is no weight shard)."""
    x = load_shard(x_path.decode())
    y = load_shard(y_path.decode()).astype(np.int32)
    w_path = w_path.decode()
    w = load_shard(w_path).astype(np.float32) if w_path else np.ones(len(y), np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), y, w


def about_centre(x):
    """(pad, crop) that make the rotations and flips of a square stamp turn about its centre pixel, S // 2
    (inputs.coadds.stamp_origins puts the galaxy there), not about the array's middle, (S - 1) / 2: for an even S
    the stamp is padded by one row and column of zeros (no data) at the far edges, whose middle is that pixel,
    and cut back to S after the turn. Turned about the middle, a 64-pixel stamp's galaxy moved by a pixel in
    x and y with the turn drawn, and the network learned to ignore offsets of a pixel (docs/training.md)."""
    n = tf.shape(x)[0]
    odd = n % 2
    return (lambda t: tf.pad(t, [[0, 1 - odd], [0, 1 - odd], [0, 0]])), (lambda t: t[:n, :n])


def augment(x, index, epoch_seed):
    """One of the eight rotations and flips of the square (the sky has no preferred orientation) about the
    stamp's centre pixel (:func:`about_centre`), the same for every channel, drawn from (epoch seed, position in
    the epoch) only: a resumed epoch repeats it exactly."""
    seed = tf.stack([tf.cast(epoch_seed, tf.int64) + 7, tf.cast(index, tf.int64)])
    k = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=4, dtype=tf.int32)
    pad, crop = about_centre(x)
    x = tf.image.rot90(pad(x), k=k[0])
    return crop(tf.cond(k[1] >= 2, lambda: tf.image.flip_left_right(x), lambda: x))


def epoch_dataset(shards: ShardSet, batch_size: int, epoch=0, shuffle_buffer: int = 0, seed: int = 1,
                  cycle_length: int = 2, weights: str = "none", class_weights=None, drop_remainder: bool = False,
                  augment_examples: bool = False) -> tf.data.Dataset:
    """The batches of one epoch of the split ``shards``; ``epoch`` may be a tensor.

    Shards are read by ``cycle_length`` interleaved readers. With a shuffle
    buffer, the shard order and the examples are shuffled with seeds derived
    from ``(seed, epoch)``. ``weights``: ``"none"`` yields (x, y); ``"shards"``
    yields (x, y, w) from the ``w<split>_N.npy`` shards; ``"class"`` yields
    (x, y, class_weights[y]). ``augment_examples``: each example rotated and
    flipped at random (:func:`augment`), for training.
    """
    split, where = shards.split, shards.directory
    if not shards.x:
        raise FileNotFoundError(f"no {split} shards (x{split}_N.npy) in {where}")
    if weights == "shards":
        if shards.weights is None:
            raise FileNotFoundError(f"weights from shards asked for, but {where} lacks w{split}_N.npy")
        wnames = [str(w) for w in shards.weights]
    else:
        wnames = [""] * len(shards.x)
    files = tf.data.Dataset.from_tensor_slices(([str(x) for x in shards.x], [str(y) for y in shards.y], wnames))
    epoch_seed = (tf.cast(seed, tf.int64) * SEED_STRIDE + tf.cast(epoch, tf.int64)) * 2
    if shuffle_buffer:
        files = files.shuffle(len(shards.x), seed=epoch_seed, reshuffle_each_iteration=False)

    def read(x_path, y_path, w_path):
        x, y, w = tf.numpy_function(_load, [x_path, y_path, w_path], [tf.float32, tf.int32, tf.float32],
                                    stateful=False)
        x.set_shape((None,) + shards.example_shape)
        y.set_shape((None,))
        w.set_shape((None,))
        # per-example work is what streaming costs: only what is needed goes through the shuffle
        return tf.data.Dataset.from_tensor_slices((x, y, w) if weights == "shards" else (x, y))

    if weights not in ("none", "shards", "class"):
        raise ValueError(f"weights must be none, shards or class, not {weights!r}")
    ds = files.interleave(read, cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=epoch_seed + 1, reshuffle_each_iteration=False)
    if augment_examples:
        ds = ds.enumerate().map(lambda i, ex: (augment(ex[0], i, epoch_seed), *ex[1:]),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if weights == "class":
        table = tf.constant(class_weights, tf.float32)
        ds = ds.map(lambda x, y: (x, y, tf.gather(table, y)))
    return ds


def loader_options(threads: int = 0) -> tf.data.Options:
    """The streams' options: several workers split every global batch between them (the shards are not files tf.data
    can shard); ``threads`` > 0: the loader's own pool of that many threads, instead of tf.data's default of one
    thread per CPU this process may run on (the job's where SLURM binds CPUs, the whole node's where it does not)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if threads:
        options.threading.private_threadpool_size = threads
    return options


def train_stream(shards: ShardSet, batch_size: int, first_epoch: int, end_epoch: int, skip_batches: int = 0,
                 threads: int = 0, **kwargs) -> tf.data.Dataset:
    """Epochs ``first_epoch .. end_epoch - 1`` of the training split ``shards`` back to back, the first
    ``skip_batches`` dropped.

    Fed to ``model.fit(steps_per_epoch=shards.batches(...))``; a run resumed
    at (epoch, batch) streams exactly the batches that remain of the uninterrupted run.
    ``threads``: the loader's threads (:func:`loader_options`).
    """
    epochs = tf.data.Dataset.range(first_epoch, end_epoch)
    ds = epochs.flat_map(lambda k: epoch_dataset(shards, batch_size, epoch=k, **kwargs))
    if skip_batches:
        ds = ds.skip(skip_batches)
    return ds.with_options(loader_options(threads)).prefetch(tf.data.AUTOTUNE)


def dataset(shards: ShardSet, batch_size: int, shuffle_buffer: int = 0, seed: int = 1, cycle_length: int = 2,
            drop_remainder: bool = False, threads: int = 0) -> tf.data.Dataset:
    """Batches of (cutout, label) from all shards of the split ``shards`` (epoch 0's order; in shard order without
    shuffle)."""
    ds = epoch_dataset(shards, batch_size, 0, shuffle_buffer, seed, cycle_length, drop_remainder=drop_remainder)
    # a known length: Keras stops after the last batch instead of warning that the input "ran out of data"
    ds = ds.apply(tf.data.experimental.assert_cardinality(shards.batches(batch_size, drop_remainder)))
    return ds.with_options(loader_options(threads)).prefetch(tf.data.AUTOTUNE)
