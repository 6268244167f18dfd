"""How fast the driver commits assembled shards (run/commits.py): shards per second on one thread and on
COMMIT_THREADS, on local disk and on an S3 server on loopback (moto), whose answers can be delayed to stand for a
real object store's latency per request.

    python benchmarks/commit_speed.py [--shards 200] [--latency-ms 0,25,100]

Each shard has a staged label file, as an assembly leaves it; only the commits are timed (log entry, create-only
record, the move of the file). Prints one JSON object: shards/s and requests per commit by store, latency and
threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time

from emonet_batch.job.commit import ShardOutcome, StagedShard
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.inputs import Shard, make_shard
from emonet_batch.job.layout import label_file, staged_file
from emonet_batch.job.storage import filesystem, join, write_bytes
from emonet_batch.run.commits import COMMIT_THREADS, Committer
from emonet_batch.run.progress import Counters

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


class DelayedServer:
    """moto's S3 app behind a WSGI wrapper that counts the requests and answers each after `latency` seconds (moto's
    own ThreadedMotoServer has no such hook). Threaded: delayed requests wait side by side, as on a real store."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.latency, self.requests = 0.0, 0
        app = DomainDispatcherApplication(create_backend_app)

        def delayed(environ, start_response):
            self.requests += 1
            time.sleep(self.latency)
            return app(environ, start_response)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.server = make_server("127.0.0.1", port, delayed, threaded=True, request_handler=MotoRequestHandler)
        self.endpoint = f"http://127.0.0.1:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request


def staged_shards(fs, output: str, count: int, attempt: str) -> list[tuple[Shard, StagedShard]]:
    """`count` shards of one label row, each with its label file staged under `attempt`."""
    shards = []
    for index in range(count):
        shard = make_shard(f"/corpus/shard-{index:06d}.tar")
        name, data = label_file(shard.shard_id), f"labels of {index}".encode()
        write_bytes(fs, join(output, staged_file(attempt, name)), data)
        outcome = ShardOutcome(shard.shard_id, shard.display_url, "complete", samples=1, labels=1)
        shards.append((shard, StagedShard(outcome, {name: hashlib.sha256(data).hexdigest()}, "model")))
    return shards


def commits_per_s(fs, output: str, count: int, threads: int, server: DelayedServer | None) -> dict:
    attempt = f"20261203T000000-{threads:04d}"
    shards = staged_shards(fs, output, count, attempt)
    before = server.requests if server else 0
    committer = Committer(fs, output, attempt, {}, Counters(), threads=threads)
    started = time.perf_counter()
    committer.submit(shards)
    committer.close()
    seconds = time.perf_counter() - started
    figures = {"shards_per_s": round(count / seconds, 1)}
    if server:
        figures["requests_per_commit"] = round((server.requests - before) / count, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--latency-ms", default="0,25,100", help="the S3 server's delay per request, a list")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    figures = {"local": {}, "s3": {}}
    with tempfile.TemporaryDirectory() as work:
        for threads in (1, COMMIT_THREADS):
            fs, output = filesystem(os.path.join(work, f"out-{threads}"), StorageOptions())
            figures["local"][f"{threads} threads"] = commits_per_s(fs, output, args.shards, threads, None)
    server = DelayedServer()
    fs, _ = filesystem("s3://results", StorageOptions(endpoint_url=server.endpoint))
    fs.mkdir("results")
    for latency in (float(ms) for ms in args.latency_ms.split(",")):
        server.latency = latency / 1000
        by_threads = figures["s3"][f"{latency:g} ms a request"] = {}
        for threads in (1, 8, COMMIT_THREADS):
            output = f"results/{latency:g}-{threads}"
            by_threads[f"{threads} threads"] = commits_per_s(fs, output, args.shards, threads, server)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
