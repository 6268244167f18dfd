"""Real processes: scoring to and from an S3-compatible server on loopback, secrets kept out of
everything written, and a driver killed mid-run then resumed."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emonet_batch.cli import main
from emonet_batch.job.inputs import shard_id

from ..shardkit import CANARY, S3_CREDENTIALS, good_shards


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FaultyProxy:
    """An HTTP proxy on loopback in front of the S3 server that answers the first GET and the first PUT of an
    object whose key has one of `prefixes` in it, for each of them, with 503 SlowDown, as S3 does under load, and
    forwards the rest. (Once per object made the test 5 s longer in backoff sleeps and tested nothing more.)"""

    def __init__(self, upstream: str, prefixes: tuple[str, ...]):
        import http.server
        import threading

        self.injected: list[str] = []
        self.kinds: set[str] = set()  # "METHOD prefix" answered with 503 once
        self.requests: list[str] = []  # every request forwarded, as "METHOD /path"
        proxy = self
        host, port = upstream.removeprefix("http://").split(":")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                import http.client

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = f"{self.command} {self.path.partition('?')[0]}"
                kind = next((f"{self.command} {p}" for p in prefixes if p in request), None)
                if self.command in ("GET", "PUT") and kind and kind not in proxy.kinds:
                    proxy.kinds.add(kind)
                    proxy.injected.append(request)
                    error = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                proxy.requests.append(request)
                upstream_connection = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                upstream_connection.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream_connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                # a HEAD answer has no body but the object's length
                self.send_header(
                    "Content-Length",
                    response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)),
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on a random loopback port, shared by the module's tests (stopping one takes half a second)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server emptied (moto's reset call), with credentials only in the environment and two buckets."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{s3_server}/moto-api/reset", method="POST"), timeout=10).close()
    for name, value in S3_CREDENTIALS.items():  # as conftest set them, whatever a test before changed
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="corpus")
    client.create_bucket(Bucket="results")
    return s3_server, client


def cli(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emonet_batch", *args], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


def test_s3_in_and_out_through_throttling_and_no_secret_anywhere(s3, tiny_models, tiny_heads, tmp_path, capsys):
    """Through a proxy that answers 503 SlowDown to the first read of every shard and the first write of every
    staged, published and commit file: every row still arrives, once. Then the output's stored embeddings are
    rescored from object storage into object storage."""
    endpoint, client = s3
    for path in good_shards(tmp_path / "in", shards=2, per_shard=4):
        client.upload_file(str(path), "corpus", f"faces/{path.name}")
    # a presigned URL (http, the access key and signature in its query) as one more input
    signed = client.generate_presigned_url("get_object", Params={"Bucket": "corpus", "Key": "faces/shard-00001.tar"})
    signature = signed.rsplit("Signature=", 1)[1].split("&")[0]
    proxy = FaultyProxy(endpoint, ("/faces/shard-", "/labels/", "/_staging/", "/_commits/"))
    try:
        run = cli(
            "score",
            "s3://corpus/faces/shard-{00000..00001}.tar",
            signed,
            *("--output", "s3://results/run1", "--model", str(tiny_models["small"])),
            *("--endpoint-url", proxy.endpoint, "--meta-fields", "gender", "--embedding", "--progress", "log"),
        )
    finally:
        proxy.close()
    assert run.returncode == 0, run.stderr
    # quiet by default: neither Ray's token warning nor its progress-bar notice reaches a fresh run's terminal
    assert "WARNING" not in run.stderr and "Progress bars" not in run.stderr, run.stderr
    assert "emonet-batch: object storage refused or failed a request for now; retrying it in" in run.stderr
    assert any(i.startswith("GET /corpus/faces/shard") for i in proxy.injected), proxy.injected
    assert any(i.startswith("PUT /results/run1/") for i in proxy.injected), proxy.injected
    assert main(["verify", "s3://results/run1", "--endpoint-url", endpoint]) == 0
    capsys.readouterr()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="results")["Contents"])
    first, second = (shard_id(f"s3://corpus/faces/shard-0000{i}.tar") for i in (0, 1))
    third = shard_id(signed)
    assert third.startswith("shard-00001-") and third != second
    checkpoints = [k for k in keys if k.startswith("run1/_commits_checkpoints/")]
    assert len(checkpoints) == 1 and checkpoints[0].endswith(".parquet")
    entries = [k.rsplit("/", 1)[-1] for k in keys if k.startswith("run1/_commit_log/")]
    logged = sorted(name.split("-", 2)[2] for name in entries)
    assert logged == sorted((first, second, third))  # an entry before each record
    layout = ("run1/stats/", "run1/_commits_checkpoints/", "run1/_commit_log/")
    assert [k for k in keys if not k.startswith(layout)] == sorted(
        [
            *(f"run1/_commits/{i}.json" for i in (first, second, third)),
            "run1/_label_options.json",
            *(f"run1/labels/{i}.parquet" for i in (first, second, third)),
            "run1/manifest.json",
            "run1/manifest.runs.parquet",
            "run1/manifest.shards.parquet",
        ]
    )
    assert {"run1/stats/stats.json", "run1/stats/report.html"} <= set(keys)
    manifest = json.loads(client.get_object(Bucket="results", Key="run1/manifest.json")["Body"].read())
    assert manifest["shard_counts"] == {"complete": 3}
    labels = pq.read_table(
        pa.BufferReader(client.get_object(Bucket="results", Key=f"run1/labels/{second}.parquet")["Body"].read())
    )
    assert labels.column("key").to_pylist() == [f"face-{i:05d}" for i in range(4, 8)]

    everything = (
        run.stdout
        + run.stderr
        + "".join(client.get_object(Bucket="results", Key=key)["Body"].read().decode("latin-1") for key in keys)
    )
    assert CANARY not in everything and "emonet-test-key" not in everything and signature not in everything

    # a second run (same options: the output records them) commits nothing twice; in-process: it starts no Ray
    again = main(
        ["score", "s3://corpus/faces/shard-{00000..00001}.tar", "--output", "s3://results/run1"]
        + ["--model", str(tiny_models["small"]), "--endpoint-url", endpoint, "--meta-fields", "gender", "--embedding"]
    )
    out, err = capsys.readouterr()
    assert again == 0, err
    assert "skipped (committed earlier)  2" in out and CANARY not in out + err

    rescored = main(
        ["rescore", "s3://results/run1", "--model", str(tiny_heads["small"]), "--output", "s3://results/run1-heads"]
        + ["--endpoint-url", endpoint, "--no-stats", "--progress", "off"]
    )
    assert rescored == 0, capsys.readouterr().err
    new = pq.read_table(
        pa.BufferReader(client.get_object(Bucket="results", Key=f"run1-heads/labels/{second}.parquet")["Body"].read())
    )
    assert new.column("key").equals(labels.column("key")) and new.column("gender").equals(labels.column("gender"))
    assert (
        max(abs(a - b) for a, b in zip(new.column("amusement").to_pylist(), labels.column("amusement").to_pylist()))
        <= 1e-5
    )


def test_object_storage_problems_fail_before_anything_starts(s3, tiny_models, tmp_path, monkeypatch, capsys):
    """In-process and in well under 5 s: a missing S3 input, then no credentials at all, each one line."""
    endpoint, client = s3
    args = ["score", "s3://corpus/faces/missing.tar", "--model", str(tiny_models["small"]), "--endpoint-url", endpoint]
    started = time.perf_counter()
    assert main([*args, "--output", "s3://results/early"]) == 2
    assert capsys.readouterr().err == "emonet-batch: error: input not found: s3://corpus/faces/missing.tar\n"
    assert main(["verify", "s3://results/nothing", "--endpoint-url", endpoint]) == 2
    assert "no committed shards under s3://results/nothing (run" in capsys.readouterr().err
    assert main([*args[:2], "--model", "s3://corpus/none", *args[4:], "--output", "s3://results/early"]) == 1
    no_model = "no exported model at s3://corpus/none (it holds no model.json)"
    assert capsys.readouterr().err == f"emonet-batch: error: {no_model}\n"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("emonet-batch: error: no credentials for s3://corpus/faces/missing.tar") and err.count("\n") == 1
    )
    assert time.perf_counter() - started < 5
    leftovers = [o["Key"] for o in client.list_objects_v2(Bucket="results", Prefix="early/").get("Contents", [])]
    assert leftovers == [] and not (tmp_path / "out").exists(), leftovers


def test_storage_errors_do_not_leak_secrets(s3, tiny_models, tmp_path):
    endpoint, _ = s3
    run = cli(
        "score",
        "s3://no-such-bucket/x-{0..1}.tar",
        "--output",
        "s3://no-such-bucket/out",
        "--model",
        str(tiny_models["small"]),
        "--endpoint-url",
        endpoint,
    )
    assert run.returncode != 0
    assert CANARY not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr


def records(commits: Path) -> list[str]:
    """The shards with a commit record; a kill mid-write leaves a hidden temporary file, which is no record."""
    return sorted(p.stem for p in commits.glob("*.json") if not p.name.startswith(".")) if commits.exists() else []


def test_killed_driver_resumes_without_loss_or_duplicates(ray_runtime, tiny_models, tmp_path):
    """Only the killed run needs a process of its own; the reference and the resumed run share the runtime."""
    good_shards(tmp_path / "in", shards=10, per_shard=6)
    args = [
        "score",
        str(tmp_path / "in"),
        "--model",
        str(tiny_models["small"]),
        "--batch-size",
        "4",
        "--progress",
        "off",
    ]
    assert main([*args, "--output", str(tmp_path / "reference"), "--no-stats"]) == 0

    commits = tmp_path / "out" / "_commits"
    process = subprocess.Popen(
        [sys.executable, "-m", "emonet_batch", *args, "--output", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(records(commits)) < 3:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray runtime it started
    process.wait()
    committed_before = records(commits)
    assert 3 <= len(committed_before) < 10, committed_before
    assert not (tmp_path / "out" / "manifest.json").exists()
    before = {name: (tmp_path / "out" / "labels" / f"{name}.parquet").read_bytes() for name in committed_before}

    assert main([*args, "--output", str(tmp_path / "out"), "--no-stats"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    figures = manifest["figures"]
    assert figures["shards_skipped"] == len(committed_before)
    assert figures["shards_scored"] == 10 - len(committed_before)
    assert figures["images"] == 6 * (10 - len(committed_before))  # committed shards were not read again
    for name, data in before.items():
        assert (tmp_path / "out" / "labels" / f"{name}.parquet").read_bytes() == data
    got = pq.read_table(tmp_path / "out" / "labels").sort_by("key")
    want = pq.read_table(tmp_path / "reference" / "labels").sort_by("key")
    assert got.num_rows == 60 and len(set(got.column("key").to_pylist())) == 60
    assert got.equals(want)
    skipped, rows = len(committed_before), got.num_rows
    print(f"resume: {skipped} shards committed before the kill and skipped, {rows} rows equal to the reference")


def test_commit_records_are_create_only_on_s3(s3):
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.storage import create_only, filesystem

    endpoint, client = s3
    fs, path = filesystem("s3://results/x/_commits/a.json", StorageOptions(endpoint_url=endpoint))
    assert create_only(fs, path, b"first") is True
    assert create_only(fs, path, b"second") is False
    assert client.get_object(Bucket="results", Key="x/_commits/a.json")["Body"].read() == b"first"


def test_a_model_from_object_storage_is_fetched_once_per_node_and_refetched_when_corrupted(
    s3, ray_runtime, tiny_models, tmp_path
):
    """The driver and two inference actors on one node share one download; a cached file that no longer matches
    its recorded hash makes the next run fetch the model again."""
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.model.record import load_model_info
    from emonet_batch.run.config import score_config
    from emonet_batch.run.score import run_score

    endpoint, client = s3
    for path in tiny_models["small"].iterdir():
        if path.is_file():
            client.upload_file(str(path), "corpus", f"models/small/{path.name}")
    good_shards(tmp_path / "in", shards=2, per_shard=3)
    proxy = FaultyProxy(endpoint, ())
    cache = tmp_path / "cache"
    storage = StorageOptions(endpoint_url=proxy.endpoint, model_cache=str(cache))

    def run(out: str):
        config = score_config(
            (str(tmp_path / "in"),), str(tmp_path / out), "s3://corpus/models/small", storage, workers=2, stats=False
        )
        return run_score(config)

    def downloads() -> int:
        return proxy.requests.count("GET /corpus/models/small/model.onnx")

    try:
        first = run("one")
        entry = cache / load_model_info(tiny_models["small"]).model_id
        assert first.exit_code == 0 and first.figures["labels"] == 6 and downloads() == 1
        # nothing half-written: the entry, its lock and its record of the files' sizes and times when hashed
        assert sorted(p.name for p in cache.iterdir()) == [entry.name, f"{entry.name}.lock", f"{entry.name}.verified"]
        with open(entry / "model.onnx", "r+b") as handle:
            handle.seek(64)
            handle.write(b"corrupt")
        second = run("two")
        assert second.exit_code == 0 and downloads() == 2 and load_model_info(entry).model_id == entry.name
    finally:
        proxy.close()


def test_a_url_no_backend_takes_or_a_storage_fault_is_one_line_without_secrets(monkeypatch, capsys):
    import importlib.util

    from botocore.exceptions import EndpointConnectionError

    from emonet_batch.errors import UsageError
    from emonet_batch.job import verify
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.storage import StorageError, filesystem

    refused = [
        ("s3://", "s3:// names no bucket or host after s3://"),
        ("s3:///x.tar", "s3:///x.tar names no bucket or host"),
        ("nope://h/x", "nope://h/x: no storage backend reads nope:// URLs"),
    ]
    if importlib.util.find_spec("gcsfs") is None:
        refused.append(("gs://b/x.tar", "gs://b/x.tar: Please install gcsfs"))
    for url, message in refused:
        with pytest.raises(UsageError, match="^" + re.escape(message)):
            filesystem(url, StorageOptions())
    with pytest.raises(StorageError, match=r"^cannot reach ftp://127\.0\.0\.1:\d+/x: ConnectionRefusedError"):
        filesystem(f"ftp://127.0.0.1:{free_port()}/x", StorageOptions())  # an FTP backend connects when made

    def unreachable(fs, output):
        raise EndpointConnectionError(endpoint_url=f"http://key:{CANARY}@127.0.0.1:1/b?X-Amz-Signature={CANARY}")

    monkeypatch.setattr(verify, "verify_output", unreachable)
    assert main(["verify", "s3://b/out"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "emonet-batch: error: a storage request failed: EndpointConnectionError: Could not connect to the endpoint "
        'URL: "http://127.0.0.1:1/b"\n'
    )
