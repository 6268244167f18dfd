"""How long a resume takes to plan when an output already holds many committed shards: the time from the run's start
to the moment it hands its first new shard to the plan, on local disk and on an S3 server on loopback (moto), without
a commit checkpoint (every record read) and with the one a finished run leaves (job/commitlog.py).

    python benchmarks/resume_speed.py [--shards 100000] [--s3-shards 100000] [--checkpoint-only]

The output is made as a run leaves it: the label options record, one commit record per shard (a copy of a real one,
its shard and input renamed) and a label file per shard (empty: a resume only lists them). The run's inputs are
an @list file of every committed shard plus one new shard; the run stops where the plan would start. Prints one
JSON object: seconds and requests (S3) by output.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import tempfile
import time
from pathlib import Path
from unittest import mock

from emonet_batch.job.commit import commit_shard
from emonet_batch.job.commitlog import write_checkpoint
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.inputs import make_shard, normalised_location
from emonet_batch.job.layout import CHECKPOINTS, COMMITS, LABEL_OPTIONS, LABELS, commit_file, label_file
from emonet_batch.job.pieces import rows_table
from emonet_batch.job.rows import COMPLETE, ShardEnd
from emonet_batch.job.storage import filesystem, join
from emonet_batch.model.record import load_model_info
from emonet_batch.run import score as score_module
from emonet_batch.run.config import score_config
from emonet_batch.run.resume import label_options

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


class Planned(Exception):
    """Raised where the run would start its plan."""


def a_real_record(model_dir: Path) -> dict:
    """The commit record the job writes for a shard of one label row."""
    import fsspec
    import numpy as np

    from emonet_batch.job.config import LabelOptions
    from emonet_batch.job.rows import SAMPLE, SCORES

    info = load_model_info(model_dir)
    shard = make_shard("/corpus/shard-template.tar")
    rows = {
        "kind": np.array([SAMPLE], dtype=object),
        "shard": np.array([shard.shard_id], dtype=object),
        "seq": np.arange(1),
        "key": np.array(["img-0"], dtype=object),
        "meta": np.array(["{}"], dtype=object),
        **{name: np.full(1, None, dtype=object) for name in ("stage", "error_type", "message")},
        SCORES: np.zeros((1, len(info.heads)), np.float32),
    }
    with tempfile.TemporaryDirectory() as work:
        table = rows_table(rows)
        commit_shard(fsspec.filesystem("file"), work, shard, table, ShardEnd(1, COMPLETE), info, LabelOptions(), "a")
        return json.loads((Path(work) / commit_file(shard.shard_id)).read_text())


def committed_output(put, output: str, template: dict, urls: list[str], wanted: dict) -> None:
    """Commit records and empty label files for `urls`, written many at a time by `put(files)`."""
    files = {join(output, LABEL_OPTIONS): json.dumps(wanted).encode()}
    for url in urls:
        shard = make_shard(url)
        record = {**template, "shard": shard.shard_id, "location": normalised_location(url)}
        files[join(output, commit_file(shard.shard_id))] = json.dumps(record, indent=1).encode()
        files[join(output, label_file(shard.shard_id))] = b""
        if len(files) >= 2000:
            put(files)
            files = {}
    put(files)


def time_to_plan(inputs_list: Path, output: str, model_dir: Path, storage: StorageOptions) -> float:
    """Seconds from run_score's call to its first shard handed to the plan."""
    config = score_config((f"@{inputs_list}",), output, str(model_dir), progress="off", stats=False)
    config = type(config)(**{**config.__dict__, "storage": storage})

    def plan(todo, *args, **kwargs):
        assert len(todo) == 1, f"{len(todo)} shards to score, one expected"
        raise Planned

    started = time.perf_counter()
    with mock.patch.object(score_module, "stream_and_commit", plan):
        try:
            score_module.run_score(config)
        except Planned:
            return time.perf_counter() - started
    raise AssertionError("the run never reached its plan")


def one_new_shard(directory: Path) -> str:
    from emonet_batch.devtools.samples import demo_samples
    from emonet_batch.devtools.shards import write_shards

    (path,) = write_shards(demo_samples(1, size=64), directory, 1)
    return str(path)


def moto_server():
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request
    return server, f"http://127.0.0.1:{port}"


def put_into_moto(files: dict[str, bytes]) -> None:
    """Objects straight into the in-process server's store: through HTTP, 200,000 of them took most of an hour, and
    only the resume that reads them is measured."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for path, data in files.items():
        bucket, key = path.split("/", 1)
        backend.put_object(bucket, key, data)


def local_checkpoint(template: dict, urls: list[str], info, work: Path) -> str:
    """A checkpoint of `urls`' records, written by write_checkpoint on a local copy of the output."""
    from emonet_batch.job.config import LabelOptions

    fs, copy = filesystem(str(work / "checkpoint-source"), StorageOptions())
    for folder in (COMMITS, LABELS):
        fs.makedirs(join(copy, folder), exist_ok=True)
    committed_output(fs.pipe, copy, template, urls, label_options(info, LabelOptions()))
    return write_checkpoint(fs, copy)


def measure(kind: str, count: int, model_dir: Path, template: dict, work: Path, every_record: bool = True) -> dict:
    urls = [f"/corpus/shard-{i:07d}.tar" for i in range(count)]
    inputs = work / f"{kind}-inputs.txt"
    inputs.write_text("\n".join([*urls, one_new_shard(work / f"{kind}-new")]) + "\n")
    server = None
    if kind == "local":
        storage, output = StorageOptions(), str(work / "out")
    else:
        server, endpoint = moto_server()
        storage, output = StorageOptions(endpoint_url=endpoint), "s3://results/resume"
    try:
        fs, path = filesystem(output, storage)
        if server:
            fs.mkdir("results")
        else:
            for folder in (COMMITS, LABELS):
                fs.makedirs(join(path, folder), exist_ok=True)
        info = load_model_info(model_dir)
        from emonet_batch.job.config import LabelOptions

        started = time.perf_counter()
        put = put_into_moto if server else fs.pipe
        committed_output(put, path, template, urls, label_options(info, LabelOptions()))
        written = time.perf_counter() - started
        fs.invalidate_cache()
        without = time_to_plan(inputs, output, model_dir, storage) if every_record else None
        # as a finished run leaves it: a checkpoint of every record, so a resume reads none of their files
        if every_record or not server:
            write_checkpoint(fs, path)
        else:  # the same records' checkpoint written on local disk (reading them here is what takes the hour)
            fs.put(local_checkpoint(template, urls, info, work), join(path, CHECKPOINTS) + "/")
        fs.invalidate_cache()
        with_checkpoint = time_to_plan(inputs, output, model_dir, storage)
        listed = len(fs.ls(join(path, COMMITS), detail=False)) + len(fs.ls(join(path, LABELS), detail=False))
        checkpoint_bytes = sum(info["size"] for info in fs.ls(join(path, CHECKPOINTS), detail=True))
    finally:
        if server:
            server.stop()
    return {
        "committed_shards": count,
        "objects_listed": listed,
        "write_s": round(written, 1),
        "to_plan_s": round(without, 2) if without is not None else None,
        "to_plan_with_checkpoint_s": round(with_checkpoint, 2),
        "checkpoint_bytes": checkpoint_bytes,
    }


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100_000, help="committed shards on local disk (0: skip)")
    parser.add_argument("--s3-shards", type=int, default=100_000, help="committed shards on the S3 server (0: skip)")
    parser.add_argument(
        "--checkpoint-only", action="store_true", help="on S3, only the resume through a checkpoint (no record read)"
    )
    parser.add_argument("--model", type=Path, help="an exported model (default: the tiny synthetic one, exported)")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model
        if model_dir is None:
            from emonet_batch.export import ExportConfig, export_model

            model_dir = export_model(ExportConfig(out=Path(work) / "model", synthetic="tiny", seed=0)).directory
        template = a_real_record(model_dir)
        figures = {}
        if args.shards:
            figures["local"] = measure("local", args.shards, model_dir, template, Path(work))
        if args.s3_shards:
            figures["s3"] = measure("s3", args.s3_shards, model_dir, template, Path(work), not args.checkpoint_only)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
