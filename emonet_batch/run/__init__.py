"""The run, above the job core and the Ray edge: plan the shards, skip those committed, stream the rest
through the edge, collect and commit each shard, write the manifest, then stats and report."""
