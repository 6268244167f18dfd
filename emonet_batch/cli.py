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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="emonet-batch")
def cli() -> None:
    """Score face-image corpora with LAION's Empathic Insight Face emotion models."""


@cli.command()
@click.option("--encoder", metavar="PATH|HUB_ID", help="SigLIP2 tower checkpoint (e.g. google/siglip2-so400m-patch16-384).")
@click.option("--heads", metavar="PATH|HUB_ID", help="Directory or hub repo of model_<emotion>_best.pth files.")
@click.option("--synthetic", type=click.Choice(["tiny", "full"]), help="Write and export a random-weight checkpoint instead.")
@click.option("--head-size", type=click.Choice(["small", "large"]), default="large", show_default=True, help="Head size of --synthetic.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --synthetic weights and of the parity images.")
@click.option("--only-heads", metavar="A,B,...", help="Export only these heads (column names); default: every head found.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: tower in fp16 with LayerNorm and softmax in fp32.")  # fmt: skip
@click.option("--normalize/--no-normalize", default=True, show_default=True, help="L2-normalise the embedding before the heads.")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True, help="ONNX opset.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for model.onnx and model.json.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
def export(encoder, heads, synthetic, head_size, seed, only_heads, precision, normalize, opset, out, overwrite) -> None:
    """Export the tower and heads to one verified ONNX graph (needs the `export` extra)."""
    try:
        from .export import ExportConfig, export_model
    except ImportError as exc:
        raise EmonetError(f"export needs torch and transformers: pip install 'emonet-batch[export]' ({exc.name} missing)") from None
    config = ExportConfig(
        out=out, encoder=encoder, heads=heads, synthetic=synthetic, head_size=head_size, seed=seed,
        only_heads=tuple(h.strip() for h in only_heads.split(",")) if only_heads else None,
        precision=precision, normalize=normalize, opset=opset, overwrite=overwrite,
    )  # fmt: skip
    result = export_model(config)
    parity = result.parity
    click.echo(f"exported {len(result.record['heads'])} {result.record['head_size']} heads, {result.record['precision']}, to {out}")
    click.echo(
        f"parity vs PyTorch on {parity.images} images: max |Δ score| {parity.max_abs_score_diff:.3g}, "
        f"embedding cosine min {parity.embedding_cosine_min:.6f}, top-emotion agreement {parity.top_emotion_agreement:.0%}"
    )
    click.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the ONNX files.")
def info(model_dir: Path, no_verify: bool) -> None:
    """Print the recorded metadata of an exported model."""
    from .model import load_model_info
    from .summary import model_info_table

    click.echo(model_info_table(load_model_info(model_dir, verify=not no_verify)))


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True, help="Where the demo writes.")
@click.option("--images", type=click.IntRange(min=1), default=8, show_default=True, help="Sample images to score.")
def demo(out: Path, images: int) -> None:
    """Export a tiny synthetic model and score generated sample images with it."""
    from .demo import run_demo

    click.echo(run_demo(out, images))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one line for expected errors, exit codes 0 / 1 (failure) / 2 (usage)."""
    try:
        result = cli.main(args=argv, prog_name="emonet-batch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("emonet-batch: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"emonet-batch: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except EmonetError as exc:
        click.echo(f"emonet-batch: error: {exc}", err=True)
        return exc.exit_code
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
