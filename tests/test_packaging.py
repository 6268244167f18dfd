"""What users install: every documented install brings exactly one ONNX Runtime, and the cluster image (Dockerfile,
`make image`) agrees with setup.cfg and with every cluster file. Read from metadata and files; nothing is built."""

import configparser
import importlib.metadata
import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from emonet_batch.job.accelerator import RUNTIME_DISTRIBUTIONS

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILES = sorted((ROOT / "cluster").glob("*.yaml"))
IMAGE_VARIABLE = "${IMAGE}"


def documented_installs() -> dict[str, set[str]]:
    """Each install command users are given -> the extras it asks for: the README's, the Makefile's venv and the
    Dockerfile's image."""
    commands = re.findall(r"pip install '[^']+'", (ROOT / "README.md").read_text())
    commands += [
        line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line and "-e" in line
    ]
    commands += [line for line in (ROOT / "Dockerfile").read_text().splitlines() if ".whl)[" in line]
    installs = {}
    for command in commands:
        extras = re.search(r"(?:emonet-batch|\.|whl\))\[([a-z,]+)\]", command)
        installs[command.strip()] = set(extras.group(1).split(",")) if extras else set()
    assert installs, "no install command found"
    return installs


def requirements_of(name: str, extras: set[str]) -> list[Requirement]:
    """The requirements an installed distribution declares, with those of `extras` (markers evaluated here)."""
    found = []
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras | {""}):
            found.append(requirement)
    return found


def resolved_names(extras: set[str]) -> set[str]:
    """Every distribution an install of emonet-batch[extras] brings, following the installed ones' metadata."""
    seen: set[str] = set()
    todo = [("emonet-batch", extras)]
    while todo:
        name, wanted = todo.pop()
        for requirement in requirements_of(name, wanted):
            key = canonicalize_name(requirement.name)
            if key in seen:
                continue
            seen.add(key)
            try:
                importlib.metadata.distribution(key)
            except importlib.metadata.PackageNotFoundError:
                continue  # not installed here (the GPU build, its CUDA libraries): its own requirements are unread
            todo.append((key, set(requirement.extras)))
    return seen


def test_every_documented_install_brings_exactly_one_onnx_runtime():
    installs = documented_installs()
    readme_commands = [command for command in installs if command.startswith("pip install")]
    assert len(readme_commands) >= 3, installs  # laptop, GPU node, and the extras beside them
    kinds = set()
    for command, extras in installs.items():
        runtimes = resolved_names(extras) & set(RUNTIME_DISTRIBUTIONS)
        assert len(runtimes) == 1, f"{command}: {sorted(runtimes) or 'no ONNX Runtime'}"
        kinds |= runtimes
    assert kinds == {"onnxruntime", "onnxruntime-gpu"}
    assert not resolved_names(set()) & set(RUNTIME_DISTRIBUTIONS), "the base install brings none"


def setup_extras() -> dict[str, list[Requirement]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = config["options.extras_require"]
    return {
        name: [Requirement(line) for line in extras[name].splitlines() if line and not line.startswith("#")]
        for name in extras
    }


def pinned(name: str) -> str:
    (line,) = [
        line
        for line in (ROOT / "requirements/constraints.txt").read_text().splitlines()
        if line.startswith(f"{name}==")
    ]
    return line.split("==")[1]


def test_the_image_agrees_with_setup_cfg_and_every_cluster_file():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", dockerfile, re.M)
    ray, cuda = re.fullmatch(r"rayproject/ray:([\d.]+)-py3\d+-cu(\d+)", base).groups()
    assert ray == pinned("ray")
    # the base's CUDA major is the one the gpu extra holds onnxruntime-gpu's CUDA libraries to
    gpu = {canonicalize_name(r.name): r for r in setup_extras()["gpu"]}
    assert gpu["onnxruntime-gpu"].extras == {"cuda", "cudnn"}
    assert str(gpu["nvidia-cuda-runtime"].specifier) == f"<{int(cuda[:2]) + 1},>={cuda[:2]}"
    assert '.whl)[gpu]"' in dockerfile and "pip wheel" in dockerfile
    assert dockerfile.rstrip().splitlines()[-1] == "RUN emonet-batch --version && emonet-batch doctor"
    assert "COPY jobs /app/jobs" in dockerfile
    assert 'docker build -t "$(IMAGE)" .' in (ROOT / "Makefile").read_text()

    images = []
    for path in CLUSTER_FILES:
        text = path.read_text()
        assert "pip install" not in text and "git+" not in text, path.name
        for document in yaml.safe_load_all(text):
            images += [(path.name, image) for image in values_of(document, "image")]
        if path.name == "raycluster.yaml":
            assert yaml.safe_load(text)["spec"]["rayVersion"] == ray
    assert {name for name, _ in images} == {p.name for p in CLUSTER_FILES}
    assert {image for _, image in images} == {IMAGE_VARIABLE}, images
    assert "/app/jobs/score_corpus.py" in (ROOT / "cluster/rayjob.yaml").read_text()


def values_of(node, key: str) -> list:
    """Every value of `key` anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [x for v in node.values() for x in values_of(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in values_of(v, key)]
    return []
