"""The Ray edge: start or attach to Ray, the read datasource, the Ray Data plan with each stage's resources,
and streaming result batches out. The only place besides job submission that imports ray; it runs the
job core's stages and knows nothing of the run above it."""
