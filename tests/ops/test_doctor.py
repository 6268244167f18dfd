"""`doctor` and the ONNX Runtime checks behind it: this machine as it is, and planted facts for each failure row.
The cluster form runs on the tests' `ray start` head (test_cluster.py)."""

import sys
from dataclasses import replace

import pytest

from emonet_batch.cli import main
from emonet_batch.job import accelerator, preflight
from emonet_batch.job.accelerator import Gpus, find_gpus, probe_session, provider_library_problem, runtime_problem
from emonet_batch.ops.doctor import FAIL, OK, DoctorOptions, NodeFacts, Row, cluster_rows, node_rows, verdict

GPU_FIX = "pip install 'onnxruntime-gpu[cuda,cudnn]>=1.31'"
H100 = Gpus(names=("NVIDIA H100 80GB HBM3",) * 2, driver="580.82.07", cuda="13.0")


def gpu_node(**changes) -> NodeFacts:
    """A GPU node that can run everything: each test plants one fault."""
    facts = NodeFacts(
        host="gpu-1",
        python="3.12.9",
        versions={"emonet-batch": "0.1.0", "ray": "2.60.0"},
        runtimes={"onnxruntime-gpu": "1.31.1"},
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        build_cuda="13.0",
        gpus=H100,
        libraries={"cuda": None, "tensorrt": None},
        sessions={"cpu": None, "cuda": None},
        free_bytes={"model cache": ("/cache/models", 100 << 30), "TensorRT cache": ("/cache/trt", 100 << 30)},
        credentials="env",
    )
    return replace(facts, **changes)


CUDA = DoctorOptions(device="cuda")


def failed(rows: list[Row]) -> dict[str, str]:
    return {row.check: row.detail for row in rows if row.status == FAIL}


def test_this_machine_without_a_gpu_says_so_plainly(capsys):
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("doctor: a run on the CPU would start"), out
    assert "session (cpu)                ok      ran the probe graph" in out
    assert main(["doctor", "--model", "nowhere"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "doctor: a run on the CPU would not start: 1 check fails (model)"
    if not find_gpus().names:  # the machines the tests run on: a CPU and no NVIDIA driver
        assert "GPUs                         -       no GPU (no NVIDIA driver)" in out
        assert main(["doctor", "--execution-provider", "cuda"]) == 1
        out = capsys.readouterr().out
        assert "doctor: a run on --execution-provider cuda would not start" in out.splitlines()[-1]
        assert "GPUs                         FAIL    no GPU (no NVIDIA driver)" in out


def test_with_ray_address_set_this_machines_table_points_to_the_cluster_check(capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "RAY_ADDRESS is set: a run scores on that cluster; --cluster checks its nodes" in out
    assert "head:10001" not in out
    monkeypatch.delenv("RAY_ADDRESS")
    assert main(["doctor"]) == 0
    assert "Ray cluster" not in capsys.readouterr().out


def test_a_machine_with_everything_passes_for_cpu_cuda_and_tensorrt():
    node = gpu_node(sessions={"cpu": None, "cuda": None, "tensorrt": None})
    for device in ("cpu", "cuda", "tensorrt"):
        rows = node_rows(node, DoctorOptions(device=device))
        assert not failed(rows), rows
    detail = {row.check: row.detail for row in node_rows(node, CUDA)}
    assert detail["GPUs"] == "2: 2 x NVIDIA H100 80GB HBM3"
    assert detail["CUDA driver"] == "580.82.07, runs CUDA up to 13.0; ONNX Runtime needs CUDA 13"


def test_both_onnx_runtimes_or_none_fail_with_the_command_that_fixes_it():
    both = gpu_node(runtimes={"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"})
    assert failed(node_rows(both, CUDA))["ONNX Runtime"] == (
        "onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are installed together and overwrite each other's files: "
        f"pip uninstall -y onnxruntime onnxruntime-gpu && {GPU_FIX}"
    )
    assert failed(node_rows(gpu_node(runtimes={}), DoctorOptions()))["ONNX Runtime"] == (
        "no ONNX Runtime is installed: pip install 'onnxruntime>=1.17'"
    )
    cpu_build = gpu_node(runtimes={"onnxruntime": "1.32.0"}, build_cuda=None, providers=("CPUExecutionProvider",))
    problems = failed(node_rows(cpu_build, CUDA))
    assert problems["ONNX Runtime"].endswith(
        f"a GPU run needs the GPU build: pip uninstall -y onnxruntime && {GPU_FIX}"
    )
    assert "providers" in problems


def test_a_driver_older_than_the_build_is_named_with_both_versions():
    old = gpu_node(gpus=replace(H100, driver="535.104.05", cuda="12.2"))
    assert failed(node_rows(old, CUDA))["CUDA driver"] == (
        "the NVIDIA driver 535.104.05 runs CUDA up to 12.2, and this ONNX Runtime was built for CUDA 13.0: "
        "install a driver for CUDA 13 or newer"
    )
    assert not failed(node_rows(old, DoctorOptions())), "a CPU run does not need the driver"


def test_a_missing_library_is_named():
    missing = "libonnxruntime_providers_cuda.so does not load: libcublasLt.so.13: cannot open shared object file"
    node = gpu_node(libraries={"cuda": missing, "tensorrt": None}, sessions={"cpu": None, "cuda": missing})
    problems = failed(node_rows(node, CUDA))
    assert problems["libraries (cuda)"] == missing and problems["session (cuda)"] == missing
    tensorrt = gpu_node(libraries={"cuda": None, "tensorrt": "libnvinfer.so.10: cannot open shared object file"})
    assert set(failed(node_rows(tensorrt, DoctorOptions(device="tensorrt")))) == {
        "libraries (tensorrt)",
        "session (tensorrt)",  # not tried on this planted node
    }
    assert not failed(node_rows(tensorrt, CUDA)), "TensorRT's libraries matter only to a TensorRT run"


def test_no_gpu_a_full_disk_and_absent_credentials_fail_only_the_runs_that_need_them():
    no_gpu = gpu_node(gpus=Gpus(reason="no NVIDIA driver"), sessions={"cpu": None})
    assert set(failed(node_rows(no_gpu, CUDA))) == {"GPUs", "session (cuda)"}
    full = gpu_node(free_bytes={"model cache": ("/m", 100 << 30), "TensorRT cache": ("/t", 1 << 20)})
    assert failed(node_rows(full, DoctorOptions(device="tensorrt")))["free space (TensorRT cache)"] == (
        "1.0 MiB at /t; needs 2.0 GiB"
    )
    assert not failed(node_rows(full, CUDA))
    remote_model = DoctorOptions(model="s3://models/large")
    assert failed(node_rows(gpu_node(credentials=None, model=""), remote_model))["S3 credentials"].startswith("absent")
    assert not failed(node_rows(gpu_node(credentials=None), DoctorOptions()))


def test_a_node_without_botocore_has_no_s3_credentials_rather_than_a_traceback(monkeypatch):
    monkeypatch.setitem(sys.modules, "botocore", None)  # an import of it then fails, as where it is not installed
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    assert preflight.s3_credential_source() is None


def test_cluster_rows_catch_version_skew_and_credentials_on_some_nodes_only():
    driver = gpu_node(host="head", gpus=Gpus(reason="no NVIDIA driver"))
    nodes = {
        "10.0.0.2 (aaaa)": (2.0, gpu_node()),
        "10.0.0.3 (bbbb)": (2.0, gpu_node(versions={"emonet-batch": "0.1.0", "ray": "2.59.0"}, credentials=None)),
        "10.0.0.4 (cccc)": (2.0, gpu_node(python="3.11.7", runtimes={"onnxruntime-gpu": "1.30.0"})),
        "10.0.0.5 (dddd)": (2.0, RuntimeError("did not answer within 120 s (every GPU busy?)")),
    }
    rows = cluster_rows(driver, nodes, CUDA)
    problems = failed(rows)
    assert problems["same Ray"] == "driver has 2.60.0: 10.0.0.3 (bbbb) has 2.59.0"
    assert problems["same Python"] == "driver has 3.12: 10.0.0.4 (cccc) has 3.11"
    assert problems["same ONNX Runtime"].startswith("10.0.0.2 (aaaa): onnxruntime-gpu 1.31.1;")
    assert problems["S3 credentials everywhere"] == "absent on 1 of 3: 10.0.0.3 (bbbb)"
    assert problems["answer"].startswith("did not answer")
    assert next(r for r in rows if r.check == "same emonet-batch").status == OK
    assert verdict(rows, CUDA) == (
        "doctor: a run on --execution-provider cuda would not start: 5 checks fail (10.0.0.5 (dddd): answer, "
        "same Python, same Ray, same ONNX Runtime, S3 credentials everywhere)"
    )


def test_on_a_cluster_only_the_nodes_ray_gives_gpus_need_them():
    cpu_node = gpu_node(gpus=Gpus(reason="no NVIDIA driver"), sessions={"cpu": None})
    rows = cluster_rows(gpu_node(), {"cpu (1)": (0.0, cpu_node), "gpu (2)": (2.0, gpu_node())}, CUDA)
    assert not failed(rows), rows
    # Ray offers GPUs the driver does not show: the actors placed there would fail
    assert set(failed(cluster_rows(gpu_node(), {"gpu (2)": (1.0, cpu_node)}, CUDA))) == {"GPUs", "session (cuda)"}


def test_without_nvml_bindings_the_gpu_row_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert find_gpus() == Gpus(reason="nvidia-ml-py is not installed, so the driver was not asked")


def test_the_checks_of_this_onnx_runtime():
    assert probe_session("cpu") is None
    assert runtime_problem({"onnxruntime": "1.32.0"}, gpu=True) is None
    if accelerator.runtime_cuda_version() is None:  # the CPU build the tests install
        assert provider_library_problem("cuda").startswith("this ONNX Runtime has no CUDAExecutionProvider")
        assert probe_session("cuda").startswith("the installed ONNX Runtime is the CPU build")


def test_score_refuses_two_onnx_runtimes_in_one_line_before_writing(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "installed_runtimes", lambda: {"onnxruntime": "1", "onnxruntime-gpu": "2"})
    args = ["score", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", str(tiny_models["small"])]
    assert main([*args, "--gpus-per-worker", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "emonet-batch: error: onnxruntime 1 and onnxruntime-gpu 2 are installed together and overwrite each other's "
        f"files: pip uninstall -y onnxruntime onnxruntime-gpu && {GPU_FIX}\n"
    )
    assert not (tmp_path / "out").exists()


def test_the_packaged_probe_graph_is_what_its_code_writes():
    pytest.importorskip("onnx")
    from emonet_batch.export.probe import probe_graph

    assert accelerator.PROBE_GRAPH.read_bytes() == probe_graph().SerializeToString()
