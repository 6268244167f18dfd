"""Running on a cluster, with real Ray on this machine: a `ray start` head with its job server, fake GPUs,
a two-node cluster losing a node, nightly partitions, and the cluster configuration files."""

import json
import logging
import os
import re
import runpy
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from emonet_batch.cli import main
from emonet_batch.job.inputs import shard_id
from emonet_batch.run.config import score_config
from emonet_batch.run.score import run_score

from ..faultkit import kill_processes, wait_for_commits
from ..shardkit import good_shards

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The head's node id as the fake node provider names nodes (its own ids count up from this one).
FAKE_HEAD_ID = "f" * 51 + "00000"


def autoscaling_config(gcs_address: str) -> dict:
    """A cluster whose autoscaler can add one node with two GPUs, and has none at the start: Ray's fake multi-node
    provider starts "nodes" as local raylets, loaded as an external provider (the wheel lacks the defaults file its
    own provider type reads)."""
    return {
        "cluster_name": "emonet-fake",
        "max_workers": 1,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": gcs_address,
            "head_node_id": FAKE_HEAD_ID,
            "launch_multiple": True,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            "gpu": {"resources": {"CPU": 1, "GPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
        **dict.fromkeys(("auth", "docker", "file_mounts"), {}),
        **dict.fromkeys(("cluster_synced_files", "rsync_exclude", "rsync_filter"), []),
        **dict.fromkeys(("initialization_commands", "setup_commands", "head_setup_commands"), []),
        **dict.fromkeys(("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"), []),
        "file_mounts_sync_continuously": False,
    }


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One `ray start --head` with the job server, shared by the tests here: token auth on, as by default, and an
    autoscaler (v2) that can add one 2-GPU node. Yields the dashboard URL, the clients' environment and the GCS
    address."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    import ray

    from emonet_batch.edge.runtime import stop_ray

    stop_ray()  # the shared in-process runtime, if a test started it: one Ray on the machine at a time here
    port, dashboard = free_port(), free_port()
    config = tmp_path_factory.mktemp("head") / "autoscaling.json"
    # the head listens on this machine's address: Ray resolves a driver's 127.0.0.1 to it
    gcs = f"{ray.util.get_node_ip_address()}:{port}"
    config.write_text(json.dumps(autoscaling_config(gcs)))
    fake_cluster = {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_enable_autoscaler_v2": "1",
        "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID,
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID,
    }
    url = f"http://127.0.0.1:{dashboard}"
    head = started_head(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--autoscaling-config={config}",
        ],
        {**env, **fake_cluster},
        url,
        tmp_path_factory.mktemp("head-log") / "ray-start.log",
    )
    yield url, env, gcs
    # `ray stop` stops every Ray process on the machine: the shared in-process runtime goes first, or its
    # driver (this pytest process) would exit when its GCS is killed under it
    stop_ray()
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
    head.wait(timeout=60)


def started_head(command: list[str], env: dict, dashboard: str, log: Path) -> subprocess.Popen:
    """`command` (a `ray start --head`) with --block, in the background, once its dashboard answers. Blocking, it
    stays the parent of the head's processes and reaps them as `ray stop` kills them; started without it, they
    were orphans the system reaped late, and `ray stop` waited 2 s on each of its three groups of processes."""
    with log.open("w") as output:  # the child keeps its own copy of the file
        head = subprocess.Popen([*command, "--block"], env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{dashboard}/api/version", timeout=2).close()
            return head
        except urllib.error.HTTPError:  # it answers (a token may be asked for)
            return head
        except OSError:  # not listening yet
            time.sleep(0.2)
    head.kill()
    raise RuntimeError(f"the head's dashboard did not answer in 120 s: {log.read_text()[-2000:]}")


def cli(*args, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "emonet_batch", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_submit_wait_scores_on_the_head(ray_head, tiny_models, tmp_path):
    address, env, _ = ray_head
    good_shards(tmp_path / "in", shards=3, per_shard=4)
    started = time.perf_counter()
    run = cli(
        "submit",
        "--address",
        address,
        "--",
        "score",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tiny_models["small"]),
        "--progress",
        "log",
        env=env,
    )
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert "submitted emonet-score-" in run.stdout and "complete  3      12       12      0" in run.stdout
    assert pq.read_table(tmp_path / "out" / "labels").num_rows == 12
    assert (tmp_path / "out" / "stats" / "report.html").exists()
    assert env["RAY_AUTH_TOKEN"] not in run.stdout + run.stderr
    print(f"submit --wait: submission to completion {seconds:.1f} s")


def test_same_job_is_not_submitted_twice_and_jobs_commands(ray_head, tiny_models, tmp_path):
    address, env, _ = ray_head
    good_shards(tmp_path / "in", shards=2, per_shard=3)
    args = [
        "--",
        "score",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tiny_models["small"]),
        "--no-stats",
    ]
    first = cli("submit", "--address", address, "--no-wait", *args, env=env)
    second = cli("submit", "--address", address, "--no-wait", *args, env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    submission_id = first.stdout.split()[-1]
    assert f"already running as {submission_id}" in second.stdout
    deadline = time.time() + 120
    while "SUCCEEDED" not in (status := cli("jobs", "status", submission_id, "--address", address, env=env).stdout):
        assert time.time() < deadline and "FAILED" not in status, status
        time.sleep(1)
    assert (
        "complete  2      6        6       0"
        in cli("jobs", "logs", submission_id, "--address", address, env=env).stdout
    )
    assert "not running" in cli("jobs", "stop", submission_id, "--address", address, env=env).stdout
    # finished, the same arguments submit a new job; stopping it while it runs frees the head for the next tests
    again = cli("submit", "--address", address, "--no-wait", *args, env=env)
    assert f"submitted {submission_id}-2" in again.stdout
    assert "stop requested" in cli("jobs", "stop", f"{submission_id}-2", "--address", address, env=env).stdout
    missing = cli("jobs", "status", "no-such-job", "--address", address, env=env)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1


#: A driver on the autoscaling head (its own process: Ray keeps one authentication token per process) that scores
#: with the GPUs per worker and workers (0: the default) given as its arguments; the GPUs are simulated, so ONNX
#: Runtime runs on the CPU.
GPU_DRIVER = """
import json, sys
from emonet_batch.errors import UsageError
from emonet_batch.run.config import score_config
from emonet_batch.run.score import run_score
inputs, output, model, gpus, workers = sys.argv[1:]
options = dict(gpus_per_worker=float(gpus), workers=int(workers) or None, batch_size=2, progress="log", stats=False,
               wait_for_resources=60)
config = score_config((inputs,), output, model, **options)
try:
    result = run_score(config, require_provider=False)
except UsageError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    from emonet_batch.edge.plan import inference_workers  # the pool size the plan took, now that the node is here

    print(json.dumps({"exit": result.exit_code, "figures": result.figures, "pool": inference_workers(config.engine)}))
"""


def test_gpu_actors_wait_for_the_autoscaler_and_get_a_gpu_each(ray_head, tiny_models, tmp_path):
    """The head has no GPU and its autoscaler can add one 2-GPU node: a run that needs more GPUs than any node type
    has fails in one line at once; a 1-GPU-per-actor run asks for a GPU, says it waits, and once the node is there
    has one actor per GPU (the default), on the GPUs Ray assigned (CUDA_VISIBLE_DEVICES), scoring every row."""
    _, env, gcs = ray_head
    good_shards(tmp_path / "in", shards=4, per_shard=3)

    def drive(gpus: str, workers: str):
        args = [str(tmp_path / "in"), str(tmp_path / "out"), str(tiny_models["small"]), gpus, workers]
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", GPU_DRIVER, *args],
            env={**env, "RAY_ADDRESS": gcs},  # attached to the head, as a Ray job's driver is
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr, time.perf_counter() - started

    refused, _, refused_s = drive("3", "1")
    assert "no node type that provides 3 GPU" in refused["error"] and "\n" not in refused["error"]
    scored, log, scored_s = drive("1", "0")
    assert scored["exit"] == 0 and scored["figures"]["images"] == 12, scored
    # one actor per GPU; which of them scored the 12 rows is Ray Data's choice (one may still be starting)
    scored_by = scored["figures"]["images_by_worker"]
    assert scored["pool"] == 2 and {worker.rsplit("gpu=", 1)[1] for worker in scored_by} <= {"0", "1"}, scored
    assert "emonet-batch: waiting for the autoscaler to add 1 GPU (0 of 60 s)" in log
    print(f"infeasible request refused in {refused_s:.1f} s; scored on the added GPU node in {scored_s:.1f} s")


def test_doctor_asks_every_node_of_the_cluster(ray_head, tiny_models):
    """One task per node, on the CPU head and on the node the autoscaler test added, which Ray gives 2 (fake) GPUs:
    a CPU run would start; a CUDA run would not, and only that node's rows fail (its driver shows no GPU)."""
    _, env, gcs = ray_head
    env = {**env, "RAY_ADDRESS": gcs}
    cpu = cli("doctor", "--cluster", "--model", str(tiny_models["small"]), env=env, timeout=180)
    assert cpu.returncode == 0, cpu.stdout + cpu.stderr
    assert cpu.stdout.rstrip().endswith("doctor: a run on the CPU would start")
    rows = [re.split(r"\s{2,}", line, maxsplit=3) for line in cpu.stdout.splitlines()[2:-1]]
    nodes = {row[0] for row in rows if row[0] != "*"}
    assert {(node, "session (cpu)", "ok") in {tuple(r[:3]) for r in rows} for node in nodes} == {True}
    assert {(node, "model", "ok") in {tuple(r[:3]) for r in rows} for node in nodes} == {True}
    assert {("*", f"same {name}", "ok") for name in ("Python", "emonet-batch", "Ray")} <= {tuple(r[:3]) for r in rows}
    if len(nodes) < 2:
        pytest.skip("the GPU node is added by the autoscaler test before this one")
    gpu = cli("doctor", "--cluster", "--execution-provider", "cuda", env=env, timeout=180)
    assert gpu.returncode == 1, gpu.stdout + gpu.stderr
    failing = [re.split(r"\s{2,}", line, maxsplit=3) for line in gpu.stdout.splitlines() if "  FAIL  " in line]
    (gpu_node,) = {row[0] for row in failing}
    assert {row[1] for row in failing} == {"ONNX Runtime", "providers", "GPUs", "session (cuda)"}
    assert [row[3] for row in failing if row[1] == "GPUs"] == ["no GPU (no NVIDIA driver)"]
    assert gpu.stdout.splitlines()[-1].startswith("doctor: a run on --execution-provider cuda would not start")


def test_submit_usage_errors(tiny_models):
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:9"}
    wrong = cli("submit", "--", "export", "--synthetic", "tiny", env=env)
    assert wrong.returncode == 2 and "submit runs one of: score, rescore, nightly" in wrong.stderr
    refused = cli(
        "submit", "--address", "http://127.0.0.1:9", "--", "score", "x", "--output", "y", "--model", "z", env=env
    )
    assert (
        refused.returncode == 1
        and refused.stderr.count("\n") == 1
        and "cannot reach the Ray job server" in refused.stderr
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("ray://head.example:10001", ("head.example", 10001)),
        ("[::1]:6379", ("::1", 6379)),
        ("auto", None),
        ("local", None),
        ("http://head:8265", None),
        ("head", None),
    ],
)
def test_the_address_a_run_checks_before_attaching(address, expected):
    from emonet_batch.job.preflight import ray_endpoint

    assert ray_endpoint(address) == expected


def test_attaching_where_nothing_answers_is_one_line_before_anything_is_written(tiny_models, tmp_path):
    """ray.init would retry an address where nothing listens for minutes without a word."""
    good_shards(tmp_path / "in", shards=1, per_shard=2)
    args = ["score", str(tmp_path / "in"), "--model", str(tiny_models["large"]), "--output", str(tmp_path / "out")]
    started = time.monotonic()
    result = cli(*args, "--progress", "off", env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert "RAY_ADDRESS: nothing answers at 127.0.0.1:" in result.stderr and time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_ray_refusing_to_attach_is_one_line(monkeypatch):
    """What ray.init raises when it cannot attach (`auto` with no cluster on the machine, a refused token) becomes
    the run's one line; on this machine `auto` would find the tests' own runtimes, so Ray's answer is planted."""
    import ray

    from emonet_batch.edge.runtime import attach
    from emonet_batch.errors import UsageError

    def refuse(**_):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to.")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(UsageError, match=r"^RAY_ADDRESS=auto: Could not find any running Ray instance\. \(start"):
        attach("auto", logging.ERROR, verbose=False)


def test_losing_an_inference_actor_and_a_worker_node_loses_no_rows(own_ray, tiny_models, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    good_shards(tmp_path / "in", shards=12, per_shard=6)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address)
    outcome = {}
    config = score_config(
        (str(tmp_path / "in"),),
        str(tmp_path / "out"),
        str(tiny_models["small"]),
        workers=1,
        batch_size=2,
        progress="off",
        stats=False,
    )
    thread = threading.Thread(target=lambda: outcome.update(result=run_score(config)))
    try:
        thread.start()
        wait_for_commits(tmp_path / "out", 1)
        killed = kill_processes("InferStage")  # the inference actor, mid-run: Ray restarts it
        wait_for_commits(tmp_path / "out", 2)
        cluster.remove_node(worker)  # then a whole node with whatever ran there
        thread.join(timeout=300)
    finally:
        ray.shutdown()
        cluster.shutdown()
    result = outcome["result"]
    labels = pq.read_table(tmp_path / "out" / "labels")
    assert killed >= 1 and result.exit_code == 0, result.outcomes
    assert labels.num_rows == 72 and len(set(labels.column("key").to_pylist())) == 72


def nightly_config(tmp_path, model) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inputs": [str(tmp_path / "incoming")],
                "output_root": str(tmp_path / "nightly"),
                "model": str(model),
                "options": {"meta-fields": ["gender"], "batch_size": 4, "no_report": True},
            }
        )
    )
    return path


def test_nightly_scores_only_new_shards(ray_runtime, tiny_models, tmp_path, capsys, monkeypatch):
    first_shards = good_shards(tmp_path / "incoming", shards=2, per_shard=3)
    config = nightly_config(tmp_path, tiny_models["small"])
    assert main(["nightly", str(config), "--date", "2026-11-24", "--progress", "off"]) == 0
    day1 = tmp_path / "nightly" / "dt=2026-11-24"
    assert sorted(p.name for p in (day1 / "_commits").iterdir()) == sorted(
        f"{shard_id(str(p))}.json" for p in first_shards
    )
    assert (day1 / "stats" / "stats.json").exists() and not (day1 / "stats" / "report.html").exists()
    capsys.readouterr()
    assert main(["nightly", str(config), "--date", "2026-11-24"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    from emonet_batch.devtools.samples import demo_samples
    from emonet_batch.devtools.shards import write_shards

    write_shards(demo_samples(3, size=64), tmp_path / "new", 3, prefix="late")[0].rename(
        tmp_path / "incoming" / "late-00000.tar"
    )
    # the job entrypoint as a script (run here, on the shared Ray runtime, rather than in a process of its own that
    # would start and stop Ray again: the Ray job test runs an entrypoint for real)
    script = ROOT / "jobs" / "nightly.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(config), "--date", "2026-11-25", "--progress", "off"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    assert exited.value.code == 0
    day2 = tmp_path / "nightly" / "dt=2026-11-25"
    late = shard_id(str(tmp_path / "incoming" / "late-00000.tar"))
    assert [p.name for p in (day2 / "_commits").iterdir()] == [f"{late}.json"]
    assert json.loads((day2 / "manifest.json").read_text())["totals"]["samples"] == 3


def test_nightly_config_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("inputs: [x]\noptions: {colour: red}\n")
    assert main(["nightly", str(tmp_path / "bad.yaml")]) == 2
    assert "missing output_root, model" in capsys.readouterr().err
    config = {"inputs": ["x"], "output_root": "o", "model": "m"}
    for options, message in (
        ({"colour": "red"}, "unknown options colour; known: accept_truncated, allow_inaccurate_model, batch_size"),
    ):
        (tmp_path / "old.yaml").write_text(yaml.safe_dump({**config, "options": options}))
        assert main(["nightly", str(tmp_path / "old.yaml")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_cluster_files_parse_and_reference_real_entrypoints():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    launcher = yaml.safe_load((ROOT / "cluster" / "gpu-cluster.yaml").read_text())
    jsonschema.validate(launcher, schema)
    documents = {}
    for name in ("raycluster.yaml", "rayjob.yaml", "nightly-cronjob.yaml"):
        documents[name] = list(yaml.safe_load_all((ROOT / "cluster" / name).read_text()))
        assert all(doc.get("kind") for doc in documents[name])
    text = "".join(
        (ROOT / "cluster" / n).read_text()
        for n in ("gpu-cluster.yaml", "raycluster.yaml", "rayjob.yaml", "nightly-cronjob.yaml")
    )
    for entrypoint in ("jobs/score_corpus.py", "jobs/nightly.py"):
        assert entrypoint in text and (ROOT / entrypoint).is_file()
    assert (
        documents["rayjob.yaml"][0]["kind"] == "RayJob" and documents["nightly-cronjob.yaml"][-1]["kind"] == "CronJob"
    )
