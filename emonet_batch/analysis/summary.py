"""Plain-text tables for the terminal (model info, demo results)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from ..job.layout import MANIFEST_SHARDS
from ..job.rows import COMPLETE
from ..model.accuracy import accuracy_problems, fast_decode_problems
from ..model.record import ModelInfo
from .stats import MAX_GROUPS, NOT_COMPLETE_SHOWN


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], wrap: int = 88) -> str:
    """Left-aligned columns separated by two spaces, a rule under the header; the last column is
    wrapped at `wrap` characters onto continuation lines."""
    head = [str(h) for h in headers]
    body = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head) - 1)]
    last_width = min(wrap, max(len(row[-1]) for row in [head] + body))
    widths.append(last_width)
    lines = [_line(head, widths), "  ".join("-" * w for w in widths)]
    for row in body:
        pieces = textwrap.wrap(row[-1], wrap) or [""]
        lines.append(_line(row[:-1] + [pieces[0]], widths))
        lines.extend(_line([""] * (len(row) - 1) + [piece], widths) for piece in pieces[1:])
    return "\n".join(lines)


def counted(count: int, noun: str) -> str:
    """`1 shard`, `2 shards`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def listed(items: Sequence[str], shown: int = 3) -> str:
    """`a, b, c, ...`: the first `shown` of `items`, and an ellipsis when there are more."""
    return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def model_info_table(info: ModelInfo) -> str:
    record = info.record
    parity = record.get("parity", {})
    sources = record.get("sources", {})
    rows = [
        ("directory", info.directory),
        ("model id (graph files + label facts)", info.model_id),
        ("files", ", ".join(f"{name} ({digest[:12]})" for name, digest in info.files.items())),
        ("kind", "heads only: embedding in, scores out" if info.heads_only else "tower and heads: pixels in"),
        ("tower id (the embeddings' tower)", info.tower_id),
        ("heads", f"{len(info.heads)} ({info.head_size}): {', '.join(info.heads)}"),
        ("image size", "-" if info.heads_only else f"{info.image_size} px, resize filter {info.resize_filter}"),
        ("embedding", f"{info.embedding_dim}-d, L2-normalised: {'yes' if info.normalize else 'no'}"),
        (
            "precision",
            info.precision + (f" ({record['quantization']['weights']} weights)" if "quantization" in record else ""),
        ),
        ("opset", record.get("opset", "?")),
        (
            "parity vs PyTorch",
            ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in parity.items()),
        ),
        ("accuracy limits", "; ".join(accuracy_problems(record)) or "within (score uses it)"),
        ("with the JPEG decode", decode_row(info)),
        ("encoder source", sources.get("encoder", "?")),
        ("heads source", sources.get("heads", "?")),
        ("source files hashed", len(sources.get("sha256", {}))),
        ("versions", ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())),
    ]
    return format_table(("field", "value"), rows)


def decode_row(info: ModelInfo) -> str:
    """The recorded error of the default pipeline (fast JPEG decode + precision), and the decode score uses."""
    if info.heads_only:
        return "-"
    measured = info.record.get("decode_parity")
    if not measured:
        return "not measured: score decodes exactly"
    fast, exact = (measured[name]["max_abs_score_diff"] for name in ("fast", "exact"))
    sizes = f"{measured['source_sizes'][0]}-{measured['source_sizes'][-1]} px JPEGs"
    verdict = "over the limits: score decodes exactly" if fast_decode_problems(info.record) else "within the limits"
    return f"max |score difference| {fast:.3g} with the fast decode, {exact:.3g} exact, on {sizes}; {verdict}"


def run_summary(result) -> str:
    """The final table of a scoring run: one row per shard status, then the run's figures."""
    by_status: dict[str, list] = {}
    for outcome in result.outcomes.values():
        by_status.setdefault("skipped (committed earlier)" if outcome.skipped else outcome.status, []).append(outcome)
    rows = [
        (status, len(group), sum(o.samples for o in group), sum(o.labels for o in group), sum(o.errors for o in group))
        for status, group in sorted(by_status.items())
    ]
    figures = result.figures
    unfinished = [o for o in result.outcomes.values() if o.status != COMPLETE]
    problems = []
    for retryable, heading in ((True, "rerun to retry"), (False, "a rerun cannot fix these")):
        group = [o for o in unfinished if o.retryable == retryable]
        if group:
            problems += [
                f"not complete ({heading}):",
                *(f"  {o.shard}: {o.status}: {o.reason}" for o in group[:NOT_COMPLETE_SHOWN]),
            ]
        if len(group) > NOT_COMPLETE_SHOWN:
            problems.append(f"  and {len(group) - NOT_COMPLETE_SHOWN} more ({MANIFEST_SHARDS} names them all)")
    lines = [
        format_table(("shards", "count", "samples", "labels", "errors"), rows),
        "",
        f"this run: {counted(figures['images'], 'image')}, {counted(figures['errors'], 'error')}, "
        f"{counted(figures['shards_scored'], 'shard')} read, {figures['shards_skipped']} committed before, "
        f"{figures['wall_s']:.1f} s, {figures['images_per_s']:.1f} images/s",
    ]
    lines += problems
    if result.warnings:
        lines += ["warnings:", *(f"  {warning}" for warning in result.warnings)]
    if result.report:
        lines.append(f"stats and report: {result.report.rsplit('/', 1)[0]}/ (open report.html)")
    lines.append(f"exit code {result.exit_code}: {result.exit_reason}")
    return "\n".join(lines)


def stats_summary(stats: dict, output: str, top: int = 5) -> str:
    run = stats["run"]
    rows = [
        (emotion, value["count"], f"{value['share']:.1%}")
        for emotion, value in list(stats["top_emotion"].items())[:top]
    ]
    lines = [
        f"stats of {counted(run['label_rows'], 'label row')} in {counted(run['label_files'], 'shard')} "
        f"({run['stats_wall_s']:.2f} s)",
        format_table(("top emotion", "images", "share"), rows),
    ]
    skipped = stats.get("metadata_skipped") or {}
    if skipped:
        listed = ", ".join(f"{name} ({count})" for name, count in skipped.items())
        lines.append(f"not grouped (over {MAX_GROUPS} distinct values): {listed}")
    lines.append(
        f"written to {output.rstrip('/')}/stats/ (stats.json, heads, histograms, top_emotions, correlation, groups)"
    )
    return "\n".join(lines)
