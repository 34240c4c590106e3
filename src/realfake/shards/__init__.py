"""Brick files to shuffled train/test shards, out of core: the census, the plan, the scatter buckets, the writer,
and the shards as their readers see them."""
