# The image every file in cluster/ runs: Ray's GPU image of the Ray version we pin, plus emonet-batch[gpu] built
# from this checkout as a wheel. The base's CUDA major is the one onnxruntime-gpu is built for (the gpu extra in
# setup.cfg says which; a test checks the two agree). The CUDA and cuDNN libraries come from pip with that extra,
# so a node needs only an NVIDIA driver; nothing is installed when a node starts.
#
#   make image IMAGE=registry.example.com/emonet-batch:0.1.0       (docker build -t "$IMAGE" .)
ARG RAY_IMAGE=rayproject/ray:2.60.0-py312-cu130

FROM ${RAY_IMAGE} AS wheel
COPY --chown=ray . /home/ray/src
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/dist /home/ray/src

FROM ${RAY_IMAGE}
COPY --from=wheel --chown=ray /home/ray/dist /tmp/emonet-dist
COPY --chown=ray requirements/constraints.txt /tmp/emonet-dist/
# the tested versions, which keep the base image's Ray
RUN python -m pip install --no-cache-dir -c /tmp/emonet-dist/constraints.txt \
        "$(ls /tmp/emonet-dist/emonet_batch-*.whl)[gpu]" \
    && rm -rf /tmp/emonet-dist
# the Ray job entry points the cluster files name (/app/jobs/score_corpus.py, /app/jobs/nightly.py)
COPY jobs /app/jobs
# the build fails here when the installed package cannot start a run (on the CPU: the builder has no GPU)
RUN emonet-batch --version && emonet-batch doctor
