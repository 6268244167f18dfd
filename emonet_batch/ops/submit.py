"""Ray Jobs: submit `emonet-batch score|rescore|nightly ...` to a cluster, follow it, stop it.

The submission id is derived from the arguments, so submitting the same job while it runs is detected
and reported instead of starting it twice. Nothing from this process's environment goes into the
runtime environment or the job metadata: workers read credentials from their own environment (and the
Ray dashboard token, when the cluster wants one, comes from RAY_AUTH_TOKEN / Ray's token file here).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import EmonetError, UsageError, first_line

SUBMITTABLE = ("score", "rescore", "nightly")
ACTIVE = {"PENDING", "RUNNING"}


@dataclass(frozen=True)
class SubmitConfig:
    args: tuple[str, ...]  # the emonet-batch command line after `--`
    address: str | None = None  # Ray dashboard address; None: RAY_ADDRESS or the local default
    wait: bool = True
    working_dir: str | None = None  # uploaded as the job's working directory (e.g. the repository)
    pip: tuple[str, ...] = ()  # extra pip requirements for the job's environment
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    env: dict[str, str] = field(default_factory=dict)  # explicit, non-secret variables only


def base_submission_id(args: tuple[str, ...]) -> str:
    digest = hashlib.sha256(json.dumps(list(args)).encode()).hexdigest()[:12]
    return f"emonet-{args[0]}-{digest}"


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # refused, unauthenticated (set RAY_AUTH_TOKEN), wrong version: all mean "cannot submit"
        raise EmonetError(
            f"cannot reach the Ray job server{f' at {address}' if address else ''}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None


def submit(config: SubmitConfig, out=sys.stdout) -> int:
    """Submit (or find the running twin of) the job; with wait, stream its logs and return its exit code."""
    if not config.args or config.args[0] not in SUBMITTABLE:
        raise UsageError(
            f"submit runs one of: {', '.join(SUBMITTABLE)} (after `--`), "
            "e.g. emonet-batch submit -- score IN --output OUT --model M"
        )
    if config.working_dir and "://" not in config.working_dir and not os.path.exists(config.working_dir):
        where = "a local folder or .zip is uploaded from here"
        raise UsageError(f"--working-dir {config.working_dir} is not here ({where})")
    jobs = client(config.address)
    base = base_submission_id(config.args)
    existing = {job.submission_id: job for job in jobs.list_jobs() if (job.submission_id or "").startswith(base)}
    running = [sid for sid, job in existing.items() if status_name(job.status) in ACTIVE]
    if running:
        print(f"already running as {running[0]}: not submitted again (emonet-batch jobs logs {running[0]})", file=out)
        return follow(jobs, running[0], out) if config.wait else 0
    submission_id = base if base not in existing else f"{base}-{len(existing) + 1}"
    runtime_env: dict[str, Any] = {"env_vars": {"PYTHONUNBUFFERED": "1", **config.env}}
    if config.working_dir:
        runtime_env["working_dir"] = config.working_dir
    if config.pip:
        runtime_env["pip"] = list(config.pip)
    jobs.submit_job(
        # `python` of the cluster's environment (its image or its activated venv) runs the job
        entrypoint=f"python -m emonet_batch {shlex.join(config.args)}",
        submission_id=submission_id,
        runtime_env=runtime_env,
        entrypoint_num_cpus=config.entrypoint_num_cpus,
        entrypoint_num_gpus=config.entrypoint_num_gpus,
        metadata={"tool": "emonet-batch", "command": config.args[0]},
    )
    print(f"submitted {submission_id}", file=out)
    return follow(jobs, submission_id, out) if config.wait else 0


def follow(jobs, submission_id: str, out=sys.stdout) -> int:
    """Stream a job's logs until it ends; the job's exit code (1 when it failed without one)."""

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(submission_id):
            print(lines, end="", file=out, flush=True)

    asyncio.run(tail())
    return exit_code(jobs.get_job_info(submission_id))


def status_name(status) -> str:
    """A JobStatus (an enum in current Ray, a plain string in older releases) as its name."""
    return getattr(status, "value", str(status))


def exit_code(info) -> int:
    code = getattr(info, "driver_exit_code", None)
    if status_name(info.status) == "SUCCEEDED":
        return 0
    return int(code) if isinstance(code, int) and code != 0 else 1


def _job(address: str | None, submission_id: str):
    """(client, job info); an unknown id is one clear error instead of Ray's traceback."""
    jobs = client(address)
    try:
        return jobs, jobs.get_job_info(submission_id)
    except RuntimeError as exc:
        raise EmonetError(f"no job {submission_id}: {first_line(exc)}") from None


def job_status(address: str | None, submission_id: str) -> str:
    _, info = _job(address, submission_id)
    return f"{submission_id}: {status_name(info.status)}" + (f" ({info.message})" if info.message else "")


def job_logs(address: str | None, submission_id: str) -> str:
    jobs, _ = _job(address, submission_id)
    return jobs.get_job_logs(submission_id)


def job_stop(address: str | None, submission_id: str) -> str:
    jobs, _ = _job(address, submission_id)
    stopped = jobs.stop_job(submission_id)
    return f"{submission_id}: {'stop requested' if stopped else 'not running'}"
