"""Training: the network, the loader that streams the shards, the devices and processes, callbacks, exact resume and
what goes to TensorBoard. The only stage that imports TensorFlow."""
