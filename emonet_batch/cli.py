"""The `emonet-batch` command line: thin click commands over the Python API.

Expected failures (EmonetError, click usage errors) print one line and exit non-zero; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import EmonetError
from .run.config import BY_NAME, comma_names, command_options, from_flags
from .run.console import EXIT_INTERRUPTED

#: Options several commands share, defined once so their names and help stay the same everywhere.
address_option = click.option(
    "--address", metavar="URL", help="Ray dashboard / job server address (default: RAY_ADDRESS, else local)."
)


def registry_option(name: str, command: str = "score", **overrides):
    """The click option of a run's option (run/config.OPTIONS), as `command` takes it."""
    option = BY_NAME[name]
    default = option.default(command)
    settings: dict = {"help": option.help, "metavar": option.metavar, "required": option.required}
    if option.kind == "flag":
        settings.update(is_flag=True)
    else:
        settings.update(type=option.click_type(), show_default=default not in (None, "", ()) and option.kind != "list")
        if option.kind == "list" or default is not None:  # click 8.5 takes default=None as a value: never required
            settings["default"] = "" if option.kind == "list" else default
    return click.option(option.flag, **{**settings, **overrides})


def run_options(command: str):
    """A run command's options, in the registry's order."""

    def decorate(function):
        for option in reversed(command_options(command)):
            function = registry_option(option.name, command)(function)
        return function

    return decorate


endpoint_url_option = registry_option("endpoint_url")
model_cache_option = registry_option("model_cache")
trt_cache_option = registry_option("trt_cache")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="emonet-batch")
def cli() -> None:
    """Score face-image corpora with LAION's Empathic Insight Face emotion models."""


@cli.command()
@click.option(
    "--encoder", metavar="PATH|HUB_ID", help="SigLIP2 tower checkpoint (e.g. google/siglip2-so400m-patch16-384)."
)
@click.option("--heads", metavar="PATH|HUB_ID", help="Directory or hub repo of model_<emotion>_best.pth files.")
@click.option(
    "--synthetic",
    type=click.Choice(["tiny", "null", "wide", "full"]),  # export/synthetic.TOWERS (importing it imports torch)
    help="Write and export a random-weight checkpoint instead: tiny (tests), null (384 px, next to no compute), "
    "wide (1152-d embedding, next to no tower; for --heads-only), full (the so400m shape).",
)
@click.option(
    "--head-size",
    type=click.Choice(["small", "large"]),
    default="large",
    show_default=True,
    help="Head size of --synthetic.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of --synthetic weights and of the parity images."
)
@click.option(
    "--only-heads", metavar="A,B,...", help="Export only these heads (column names); default: every head found."
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="fp32",
    show_default=True,
    help="fp16 (GPUs): tower in fp16 with LayerNorm and softmax in fp32. int8 (CPUs): weights of the matrix "
    "products in int8, activations quantised per batch.",
)
@click.option(
    "--parity-images",
    type=click.IntRange(min=1),
    metavar="N",
    help="Calibration images the accuracy against fp32 PyTorch is measured on. Default: 4 for fp32, 16 otherwise.",
)
@click.option(
    "--normalize/--no-normalize", default=True, show_default=True, help="L2-normalise the embedding before the heads."
)
@click.option(
    "--opset",
    type=click.IntRange(min=17),
    default=20,
    show_default=True,
    help="ONNX opset (20 and newer keep GELU one operator instead of ten).",
)
@click.option(
    "--heads-only",
    is_flag=True,
    help="Export only the heads, as a model whose input is the tower's embedding (what score --embedding stores); "
    "it records the id of the tower (--encoder or --synthetic) whose embeddings it reads. fp32 only.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for model.onnx and model.json.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
def export(
    encoder,
    heads,
    synthetic,
    head_size,
    seed,
    only_heads,
    precision,
    parity_images,
    normalize,
    opset,
    heads_only,
    out,
    overwrite,
) -> None:
    """Export the tower and heads to one verified ONNX graph (needs the `export` extra)."""
    try:
        from .export import ExportConfig, export_model
    except ImportError as exc:
        raise EmonetError(
            f"export needs torch and transformers: pip install 'emonet-batch[export]' ({exc.name} missing)"
        ) from None
    from .model.accuracy import accuracy_problems
    from .model.record import load_model_info

    config = ExportConfig(
        out=out,
        encoder=encoder,
        heads=heads,
        synthetic=synthetic,
        head_size=head_size,
        seed=seed,
        only_heads=tuple(comma_names(only_heads)) if only_heads is not None else None,
        precision=precision,
        parity_images=parity_images,
        normalize=normalize,
        opset=opset,
        overwrite=overwrite,
        heads_only=heads_only,
    )
    result = export_model(config)
    parity = result.parity
    record = result.record
    what = "heads only (embedding in)" if heads_only else record["precision"]
    click.echo(f"exported {len(record['heads'])} {record['head_size']} heads, {what}, to {out}")
    click.echo(
        f"parity vs PyTorch on {parity.images} {'embeddings' if heads_only else 'images'}: "
        f"max |Δ score| {parity.max_abs_score_diff:.3g}, "
        f"embedding cosine min {parity.embedding_cosine_min:.6f}, "
        f"top-emotion agreement {parity.top_emotion_agreement:.0%}"
    )
    click.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    problems = accuracy_problems(load_model_info(out, verify=False).record)
    if problems:
        click.echo(
            f"warning: {'; '.join(problems)}: score refuses this model unless --allow-inaccurate-model", err=True
        )


@cli.command()
@click.argument("model", metavar="MODEL_DIR|URL")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the ONNX files (a local model's).")
@model_cache_option
@endpoint_url_option
def info(model: str, no_verify: bool, model_cache: str | None, endpoint_url: str | None) -> None:
    """Print the recorded metadata of an exported model; one at a URL is fetched into --model-cache (and verified)
    as a run fetches it."""
    from .analysis.summary import model_info_table
    from .job.config import StorageOptions
    from .job.fetch import is_remote, local_model
    from .model.record import load_model_info

    directory = local_model(model, StorageOptions(endpoint_url=endpoint_url), model_cache)
    click.echo(model_info_table(load_model_info(directory, verify=not (no_verify or is_remote(model)))))


def run_and_summarise(make_config, **flags) -> int:
    """Build a run's config with `make_config(output, model, **options)` from the command's flags, run it, print its
    summary."""
    from .analysis.summary import run_summary
    from .run.score import run_score

    options = from_flags(flags)
    result = run_score(make_config(options.pop("output"), options.pop("model"), **options))
    click.echo(run_summary(result))
    return result.exit_code


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@run_options("score")
def score(inputs, **flags) -> int:
    """Score WebDataset (.tar) or Parquet shards into per-shard label Parquet files.

    INPUT: shard paths or URLs, brace ranges (shard-{00000..00399}.tar), globs, directories, or @list.txt.
    Exit codes: 0 clean, 1 failed or unfinished shards, 2 usage error, 3 more errors than --max-error-rate.
    """
    from functools import partial

    from .run.config import score_config

    return run_and_summarise(partial(score_config, inputs), **flags)


@cli.command()
@click.argument("source", metavar="SOURCE_OUTPUT")
@run_options("rescore")
def rescore(source, **flags) -> int:
    """Apply a heads-only model (export --heads-only) to the embeddings an output stores, into a new output.

    SOURCE_OUTPUT: an output scored with --embedding (a path or URL). Its committed shards become the new output's,
    with the same layout, commit records, manifest, stats and report; key, shard and metadata columns are carried
    over, and its error rows too. No image is read and the tower does not run. The model must be for the tower
    that made the embeddings. Exit codes as for score.
    """
    from functools import partial

    from .run.config import rescore_config

    return run_and_summarise(partial(rescore_config, source), **flags)


@cli.command()
@click.argument("output")
@endpoint_url_option
def stats(output: str, endpoint_url: str | None) -> None:
    """Aggregate statistics of a scoring output into OUTPUT/stats/ (stats.json + Parquet tables)."""
    from .analysis.stats import compute_stats
    from .analysis.summary import stats_summary
    from .job.config import StorageOptions

    click.echo(stats_summary(compute_stats(output, StorageOptions(endpoint_url=endpoint_url)), output))


@cli.command()
@click.argument("output")
@endpoint_url_option
def verify(output: str, endpoint_url: str | None) -> int:
    """Check every commit record of OUTPUT against the bytes of its files; exit 1 naming the shards that differ,
    2 when OUTPUT holds no commit record."""
    from .job.config import StorageOptions
    from .job.storage import filesystem, redact_url
    from .job.verify import verify_output

    fs, path = filesystem(output, StorageOptions(endpoint_url=endpoint_url))
    problems = verify_output(fs, path)
    for shard_id, problem in problems.items():
        click.echo(f"{shard_id}: {problem}")
    if problems:
        click.echo(
            f"shards that differ from their commit records: {len(problems)}; `score --repair` redoes them", err=True
        )
        return 1
    click.echo(f"{redact_url(output)}: every commit record matches its files")
    return 0


@cli.command()
@click.argument("config_file", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
@click.option("--date", "day", metavar="YYYY-MM-DD", help="The partition to write (default: today, UTC).")
@registry_option("progress")
def nightly(config_file: Path, day: str | None, progress: str) -> int:
    """Score the shards no earlier night committed into OUTPUT_ROOT/dt=YYYY-MM-DD/, then stats and report."""
    import datetime as dt

    from .analysis.summary import run_summary
    from .ops.nightly import NightlyConfig, run_nightly

    try:
        date = dt.date.fromisoformat(day) if day else None
    except ValueError:
        raise click.BadParameter(f"not a date: {day}", param_hint="--date") from None
    result = run_nightly(NightlyConfig.from_yaml(config_file), date, progress)
    if result is None:
        click.echo("nothing to do: every input shard is committed in an earlier or today's partition")
        return 0
    click.echo(run_summary(result))
    return result.exit_code


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@address_option
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Stream the job's logs and exit with its status."
)
@click.option("--working-dir", metavar="DIR", help="Upload DIR as the job's working directory (e.g. this repository).")
@click.option(
    "--pip", "pip_packages", multiple=True, metavar="REQ", help="Extra pip requirement for the job (repeatable)."
)
@click.option("--entrypoint-num-cpus", type=click.FloatRange(min=0), help="CPUs reserved for the job's driver.")
@click.option("--entrypoint-num-gpus", type=click.FloatRange(min=0), help="GPUs reserved for the job's driver.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- score|rescore|nightly ARGS...")
def submit(address, wait, working_dir, pip_packages, entrypoint_num_cpus, entrypoint_num_gpus, command) -> int:
    """Submit `score`, `rescore` or `nightly` as a Ray job; the same arguments while it runs are not submitted twice."""
    from .ops.submit import SUBMITTABLE, SubmitConfig
    from .ops.submit import submit as submit_job

    check_job_command_line(command, SUBMITTABLE)
    config = SubmitConfig(
        args=tuple(command),
        address=address,
        wait=wait,
        working_dir=working_dir,
        pip=tuple(pip_packages),
        entrypoint_num_cpus=entrypoint_num_cpus,
        entrypoint_num_gpus=entrypoint_num_gpus,
    )
    return submit_job(config)


def check_job_command_line(command: tuple[str, ...], submittable: tuple[str, ...]) -> None:
    """Parse the job's command line here as the cluster will, so that a missing argument or a misspelt flag fails
    now rather than after the job has started. (Only the parsing: the paths it names are the cluster's.)"""
    if not command or command[0] not in submittable:
        return  # submit says which commands it runs
    job_command = cli.commands[command[0]]
    try:
        with job_command.make_context(f"emonet-batch {command[0]}", list(command[1:])):
            pass
    except click.UsageError as exc:
        raise click.UsageError(f"the job's command line: {exc.format_message()}") from None


@cli.group()
def jobs() -> None:
    """Follow submitted jobs: status, logs, stop."""


@jobs.command("status")
@click.argument("submission_id")
@address_option
def jobs_status(submission_id: str, address: str | None) -> None:
    """Print a job's status."""
    from .ops.submit import job_status

    click.echo(job_status(address, submission_id))


@jobs.command("logs")
@click.argument("submission_id")
@address_option
def jobs_logs(submission_id: str, address: str | None) -> None:
    """Print a job's logs so far."""
    from .ops.submit import job_logs

    click.echo(job_logs(address, submission_id), nl=False)


@jobs.command("stop")
@click.argument("submission_id")
@address_option
def jobs_stop(submission_id: str, address: str | None) -> None:
    """Ask a running job to stop."""
    from .ops.submit import job_stop

    click.echo(job_stop(address, submission_id))


@cli.command()
@click.argument("output")
@click.option(
    "--gallery",
    type=click.IntRange(min=0),
    default=6,
    show_default=True,
    help="Highest-scoring images per emotion, read back from the shards (0: none).",
)
@endpoint_url_option
def report(output: str, gallery: int, endpoint_url: str | None) -> None:
    """Write OUTPUT/stats/report.html: charts and a gallery in one self-contained file."""
    from .analysis.report import build_report
    from .job.config import StorageOptions

    click.echo(f"report: {build_report(output, StorageOptions(endpoint_url=endpoint_url), gallery)}")


@cli.command()
@click.option(
    "--labels", required=True, metavar="OUTPUT_URL", help="A scoring output (its committed label files are read)."
)
@click.option(
    "--annotations",
    required=True,
    metavar="SOURCE",
    help="hq.csv or binary.csv (path or URL), or a hub dataset id (laion/emonet-face-hq, laion/emonet-face-binary).",
)
@click.option(
    "--format", "kind", type=click.Choice(["hq", "binary"]), help="Annotation format. Default: told from the columns."
)
@click.option(
    "--key-pattern", metavar="REGEX", help="Regex whose first group is the annotation image id inside a sample key."
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap rounds for the rho CI (hq).",
)
@endpoint_url_option
def evaluate(labels, annotations, kind, key_pattern, bootstrap, endpoint_url) -> None:
    """Agreement of the labels with the EmoNet-Face expert annotations (markdown on stdout + JSON)."""
    try:
        from .analysis.evaluate import EvaluateConfig, run_evaluate
    except ImportError as exc:
        raise EmonetError(
            f"evaluate needs the eval extra: pip install 'emonet-batch[eval]' ({exc.name} missing)"
        ) from None
    from .job.config import StorageOptions

    config = EvaluateConfig(
        labels=labels,
        annotations=annotations,
        format=kind,
        key_pattern=key_pattern,
        bootstrap=bootstrap,
        storage=StorageOptions(endpoint_url=endpoint_url),
    )
    result, table = run_evaluate(config)
    click.echo(table)
    click.echo(f"\nJSON: {result['written_to']}")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the shards.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Samples per shard.")
@click.option(
    "--metadata", type=click.Path(path_type=Path), help="CSV or JSON of per-image metadata, keyed by file name."
)
@click.option("--prefix", default="shard", show_default=True, help="Shard file name prefix.")
@click.option("--overwrite", is_flag=True, help="Replace the <prefix>-NNNNN.tar shards already in --out.")
def shard(source: Path, out: Path, shard_size: int, metadata: Path | None, prefix: str, overwrite: bool) -> None:
    """Pack an image folder (plus optional metadata) into WebDataset shards."""
    from .analysis.summary import counted, listed
    from .devtools.shards import folder_to_shards

    packed = folder_to_shards(source, out, shard_size, metadata, prefix, overwrite)
    names = packed.paths[0].name + (f" .. {packed.paths[-1].name}" if len(packed.paths) > 1 else "")
    with_metadata = f", {counted(len(packed.matched), 'metadata record')} used" if metadata else ""
    click.echo(
        f"wrote {counted(packed.images, 'image')} in {counted(len(packed.paths), 'shard')}{with_metadata} to {out}: "
        f"{names}"
    )
    if packed.unmatched:
        click.echo(
            f"warning: {counted(len(packed.unmatched), 'metadata record')} named no image under {source} "
            f"({listed(packed.unmatched)})",
            err=True,
        )


@cli.command()
@click.option(
    "--cluster",
    is_flag=True,
    help="Check every node of the Ray cluster (RAY_ADDRESS, else the one this machine belongs to), one task each.",
)
@registry_option(
    "execution_provider",
    default=None,
    show_default=False,
    help="Check for a GPU run with this ONNX Runtime provider (default: a run on the CPU).",
)
@click.option("--model", metavar="DIR|URL", help="Fetch (into --model-cache) and verify this model, as a run does.")
@model_cache_option
@trt_cache_option
@endpoint_url_option
def doctor(cluster, execution_provider, model, model_cache, trt_cache, endpoint_url) -> int:
    """What this machine (or every node) has and what a run needs; exit 0 only when such a run would start."""
    from .analysis.summary import format_table
    from .job.config import StorageOptions
    from .ops.doctor import DoctorOptions, run_doctor, verdict

    options = DoctorOptions(
        device=execution_provider or "cpu",
        model=model,
        storage=StorageOptions(endpoint_url=endpoint_url, model_cache=model_cache),
        trt_cache=trt_cache,
    )
    rows, code = run_doctor(options, cluster)
    headers = ("node", "check", "status", "detail") if cluster else ("check", "status", "detail")
    cells = [((row.node,) if cluster else ()) + (row.check, row.status, row.detail) for row in rows]
    click.echo(format_table(headers, cells))
    click.echo(verdict(rows, options))
    return code


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("emonet-demo"),
    show_default=True,
    help="Where the demo writes.",
)
@registry_option("progress")
def demo(out: Path, progress: str) -> int:
    """Write sample shards, export a tiny synthetic model, and score them with the real job."""
    from .devtools.demo import run_demo

    text, code = run_demo(out, progress=progress)
    click.echo(text)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one line for expected errors, exit codes 0 / 1 (failure) / 2 (usage) / 130 (Ctrl-C).

    The command runs through click's make_context/invoke rather than `cli.main`, which answers Ctrl-C with a
    blank line and an Abort of its own: here Ctrl-C at any phase is one line and exit 130."""
    try:
        with cli.make_context("emonet-batch", list(sys.argv[1:] if argv is None else argv)) as context:
            result = cli.invoke(context)
    except KeyboardInterrupt:
        return interrupted()
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("emonet-batch: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"emonet-batch: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except EmonetError as exc:
        click.echo(f"emonet-batch: error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:
        from .job.storage import fault_line, storage_faults

        if not isinstance(exc, storage_faults()):
            raise
        click.echo(f"emonet-batch: error: {fault_line(exc)}", err=True)
        return 1
    return result if isinstance(result, int) else 0


def interrupted() -> int:
    click.echo("emonet-batch: interrupted", err=True)
    return EXIT_INTERRUPTED


def run() -> None:
    """The console script: the command, then Ray stopped here, where Ctrl-C is still one line and exit 130,
    rather than in Ray's exit hook after the summary (where Ctrl-C would be a traceback and exit 0), then the exit
    without the interpreter's teardown. Native libraries' own stderr writes go to a log file unless --verbose
    (run/console.py says why)."""
    from .run.console import exit_without_teardown, native_stderr_to_file

    with native_stderr_to_file(enabled="--verbose" not in sys.argv[1:]) as exit_code:
        code = main()
        try:
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                from .edge.runtime import stop_ray

                stop_ray()
        except KeyboardInterrupt:
            code = interrupted()
        exit_code.append(code)
    exit_without_teardown(code)
