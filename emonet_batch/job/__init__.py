"""The scoring job's core: inputs -> read -> decode -> infer -> collect -> commit, the row protocol between
the stages (rows) and the output layout (layout). Plain Python over numpy, pyarrow, fsspec and ONNX Runtime:
neither ray nor torch, and nothing of the run, the edge or the tools above it."""
