"""Report stage: <output>/stats/report.html, one self-contained page (plots and thumbnails embedded).

Sections (with a table of contents): run facts and the model's provenance; top-emotion bar chart; per-head
summary table; per-emotion score distributions (small multiples); clustered correlation heatmap; per-group
comparison heatmaps (one per metadata field); error rows by type with examples; a gallery of the
highest-scoring images per emotion, read back from the input shards by key. Built from stats.json (computed first when
missing) and one more pass over the committed label files for the gallery.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ..job.config import StorageOptions
from ..job.decode import ImageDecodeError, open_image, to_rgb
from ..job.inputs import Shard, shard_format
from ..job.layout import KEY, LABEL_OPTIONS, REPORT_HTML, SHARD, STATS_JSON, error_file, stats_file
from ..job.read import shard_rows
from ..job.rows import SAMPLE
from ..job.storage import NOT_FOUND, filesystem, join, json_object, redact_url, write_bytes
from ..job.verify import committed_shards
from ..model.taxonomy import EMOTION_COLUMNS, FAMILIES, family_of, label_of
from .stats import MAX_GROUPS, compute_stats, label_batches

_FAMILY_COLOURS = dict(zip(FAMILIES, ["#e4572e", "#f3a712", "#669bbc", "#29335c", "#8cb369", "#a8a8a8", "#b56576"]))
THUMBNAIL_PX = 112


def figure_png(figure) -> str:
    """A matplotlib figure as a data: URI (and closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def top_emotion_chart(stats: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    items = list(stats["top_emotion"].items())
    labels = [label for label, _ in items][::-1]
    figure, axis = plt.subplots(figsize=(8, max(2.5, 0.28 * len(items))))
    axis.barh(
        labels,
        [v["share"] * 100 for _, v in items][::-1],
        color=[_FAMILY_COLOURS[family_of(label)] for label in labels],
    )
    axis.set_xlabel("share of images (%)")
    axis.set_title("Top emotion per image")
    for family, colour in _FAMILY_COLOURS.items():
        axis.bar(0, 0, color=colour, label=family)
    axis.legend(fontsize=7, loc="lower right")
    return figure_png(figure)


def distributions_chart(stats: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    edges = np.array(stats["histogram_edges"])
    heads = [row["head"] for row in stats["heads"]]
    columns = 8
    rows = int(np.ceil(len(heads) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * 1.9, rows * 1.7), sharex=True, layout="constrained", squeeze=False
    )
    for axis, head in zip(np.ravel(axes), heads):
        counts = np.array(stats["histograms"][head][1:-1])  # without under- and overflow
        colour = _FAMILY_COLOURS[family_of(label_of(head))] if head in EMOTION_COLUMNS else "#555555"
        axis.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=colour)
        axis.set_title(short_lines(label_of(head), 20), fontsize=7)
        axis.tick_params(labelsize=6)
        axis.set_yticks([])
    for axis in np.ravel(axes)[len(heads) :]:
        axis.axis("off")
    figure.suptitle("Raw score distributions per head (bars: images per 0.25-wide bin)", fontsize=10)
    figure.supxlabel("raw score", fontsize=8)
    figure.supylabel("images", fontsize=8)
    return figure_png(figure)


def short_lines(label: str, width: int) -> str:
    """`label` in lines of about `width` characters, broken at spaces and after slashes, never inside a word
    ("Thankfulness/Gratitude" as "Thankfulness/" and "Gratitude", not "Thankfulness/Gratitu" and "de")."""
    lines = textwrap.wrap(label.replace("/", "/ "), width, break_long_words=False)
    return "\n".join(line.replace("/ ", "/") for line in lines)


def cluster_order(matrix: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering on 1 - correlation (scipy)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1 - np.nan_to_num(matrix, nan=0.0), 0, 2)
    np.fill_diagonal(distance, 0)
    if len(matrix) < 3:
        return np.arange(len(matrix))
    return leaves_list(linkage(squareform((distance + distance.T) / 2, checks=False), method="average"))


def correlation_chart(stats: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    columns = stats["correlation"]["columns"]
    matrix = np.array(stats["correlation"]["matrix"], dtype=float)
    order = cluster_order(matrix)
    figure, axis = plt.subplots(figsize=(9, 8))
    image = axis.imshow(matrix[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    names = [label_of(columns[i]) for i in order]
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    axis.set_yticks(range(len(names)), names, fontsize=6)
    axis.set_title("Correlation of emotion scores (clustered)")
    figure.colorbar(image, ax=axis, shrink=0.7, label="Pearson r")
    return figure_png(figure)


def group_charts(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, chart) per metadata field: groups x emotions, mean score minus the overall mean."""
    import matplotlib.pyplot as plt

    overall = {row["head"]: row["mean"] for row in stats["heads"]}
    charts = []
    for name in stats["metadata_fields"]:
        groups = [g for g in stats["groups"] if g["field"] == name]
        if not groups:
            continue
        matrix = np.array([[g[e] - overall[e] for e in EMOTION_COLUMNS if e in g] for g in groups], dtype=float)
        emotions = [label_of(e) for e in EMOTION_COLUMNS if e in groups[0]]
        figure, axis = plt.subplots(figsize=(11, 0.45 * len(groups) + 2))
        limit = float(np.nanmax(np.abs(matrix))) or 1.0
        image = axis.imshow(matrix, cmap="PuOr_r", vmin=-limit, vmax=limit, aspect="auto")
        axis.set_xticks(range(len(emotions)), emotions, rotation=90, fontsize=6)
        axis.set_yticks(range(len(groups)), [f"{g['group']} (n={g['count']})" for g in groups], fontsize=7)
        axis.set_title(f"Mean score by {name}, relative to all images")
        figure.colorbar(image, ax=axis, shrink=0.8, label="mean - overall mean")
        charts.append((name, figure_png(figure)))
    return charts


def top_keys(fs, output: str, commits: dict[str, Any], per_emotion: int) -> dict[str, list[tuple[float, str, str]]]:
    """Per emotion the `per_emotion` highest-scoring (score, shard, key), streamed over the label files."""
    best: dict[str, list[tuple[float, str, str]]] = {e: [] for e in EMOTION_COLUMNS}
    for batch in label_batches(fs, output, commits):
        keys = batch.column(KEY).to_pylist()
        shards = [str(s) for s in batch.column(SHARD).to_pylist()]
        for emotion in EMOTION_COLUMNS:
            if emotion not in batch.schema.names:
                continue
            scores = batch.column(emotion).to_numpy(zero_copy_only=False)
            take = np.argsort(-scores, kind="stable")[:per_emotion]
            merged = best[emotion] + [(float(scores[i]), shards[i], keys[i]) for i in take]
            best[emotion] = sorted(merged, key=lambda item: -item[0])[:per_emotion]
    return {e: v for e, v in best.items() if v}


def thumbnails(
    commits: dict[str, Any], wanted: dict[str, set[str]], storage: StorageOptions, key_column: str | None
) -> dict[tuple[str, str], str]:
    """(shard, key) -> thumbnail data URI, reading each needed shard (its commit record names the input) once
    and only until its keys are found."""
    out = {}
    for shard_id, keys in wanted.items():
        url = commits.get(shard_id, {}).get("input")
        if not url:
            continue
        remaining = set(keys)
        for row in shard_rows(Shard(url, shard_id, shard_format(url) or "tar"), storage, key_column):
            if row["kind"] == SAMPLE and row["key"] in remaining:
                remaining.discard(row["key"])
                try:
                    image = to_rgb(open_image(row["image"]))
                except ImageDecodeError:
                    continue
                image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=80)
                out[(shard_id, row["key"])] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
            if not remaining:
                break
    return out


def recorded_key_column(fs, output: str) -> str | None:
    """The --key-column the output was scored with (its label options record), so keys read back match."""
    try:
        return json_object(fs, join(output, LABEL_OPTIONS)).get("key_column")
    except (*NOT_FOUND, ValueError):  # none, or not a record: keys are read back as they are
        return None


def gallery_html(fs, output: str, commits: dict[str, Any], per_emotion: int, storage: StorageOptions) -> str:
    if per_emotion <= 0:
        return "<p>Gallery disabled.</p>"
    best = top_keys(fs, output, commits, per_emotion)
    wanted: dict[str, set[str]] = {}
    for items in best.values():
        for _, shard, key in items:
            wanted.setdefault(shard, set()).add(key)
    thumbs = thumbnails(commits, wanted, storage, recorded_key_column(fs, output))
    wanted_count = sum(len(keys) for keys in wanted.values())
    rows = ["<p>Each image's number is its raw score for that emotion (before centering on the neutral mean).</p>"]
    if len(thumbs) < wanted_count:
        rows.append(
            f'<p class="warning">{wanted_count - len(thumbs)} of {wanted_count} gallery images could not be read '
            "back from their input shards (moved, deleted, or behind a signed URL that expired).</p>"
        )
    for emotion, items in best.items():
        cells = "".join(
            f'<figure><img src="{thumbs[(shard, key)]}" alt="{html.escape(key)}">'
            f"<figcaption>{html.escape(key)}<br>raw {score:.2f}</figcaption></figure>"
            for score, shard, key in items
            if (shard, key) in thumbs
        )
        rows.append(
            f'<div class="emotion"><h3>{html.escape(label_of(emotion))}</h3><div class="strip">{cells}</div></div>'
        )
    return "\n".join(rows)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{margin-bottom:.2rem} .facts{color:#555} section{margin:2.5rem 0}
table.facts td{padding:.1rem 1rem .1rem 0} img.chart{max-width:100%}
.emotion h3{margin:.8rem 0 .3rem;font-size:.95rem} .strip{display:flex;gap:.5rem;flex-wrap:wrap}
figure{margin:0;text-align:center;font-size:.7rem;color:#555}
figure img{width:112px;height:112px;object-fit:cover;border-radius:4px}
nav ol{columns:2;color:#555} .warning{color:#a33;font-weight:600}
table.numbers{border-collapse:collapse;font-size:.8rem} table.numbers td,table.numbers th{padding:.1rem .6rem}
table.numbers td{text-align:right} table.numbers td:first-child{text-align:left}
table.numbers tr:nth-child(even){background:#f4f4f4}
"""


NO_GROUPS = "<p>No metadata fields in the labels (score with --meta-fields).</p>"


def skipped_groups(stats: dict[str, Any]) -> str:
    skipped = stats.get("metadata_skipped") or {}
    if not skipped:
        return ""
    listed = ", ".join(f"{html.escape(name)} ({count} distinct values)" for name, count in skipped.items())
    return f"<p>Not grouped, having more than {MAX_GROUPS} distinct values: {listed}.</p>"


SECTIONS = {
    "run": "Run",
    "top-emotions": "Top emotions",
    "heads": "Per-head summary",
    "distributions": "Score distributions",
    "correlation": "How emotions co-vary",
    "groups": "Groups",
    "errors": "Errors",
    "gallery": "Highest-scoring images per emotion",
}


def heads_table(stats: dict[str, Any]) -> str:
    """The per-head summary of stats.json as a table: count, mean, std and quantiles of the raw scores."""
    columns = ["count", "mean", "std", "min", "p5", "p25", "p50", "p75", "p95", "max"]
    cell = lambda v: "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = "".join(
        f"<tr><td>{html.escape(label_of(row['head']))}</td>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns)
        for row in stats["heads"]
    )
    header = "".join(f"<th>{c}</th>" for c in ["head", *columns])
    return f'<p>Raw head scores.</p><table class="numbers"><tr>{header}</tr>{rows}</table>'


def errors_html(fs, output: str, commits: dict[str, Any], examples: int = 3) -> str:
    """Error rows by type across the committed shards, with a few examples of each."""
    counts: dict[str, int] = {}
    shown: dict[str, list[tuple[str, str, str]]] = {}
    for shard_id in sorted(commits):
        if error_file(shard_id) not in commits[shard_id].get("files", {}):
            continue
        with fs.open(join(output, error_file(shard_id)), "rb") as handle:
            for row in pq.read_table(handle, columns=["key", "stage", "error_type", "message"]).to_pylist():
                kind = f"{row['stage']}: {row['error_type']}"
                counts[kind] = counts.get(kind, 0) + 1
                if len(shown.setdefault(kind, [])) < examples:
                    shown[kind].append((shard_id, row["key"], row["message"]))
    if not counts:
        return "<p>No error rows: every sample read was labelled.</p>"
    items = []
    for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        cases = "".join(
            f"<li>{html.escape(shard)} / {html.escape(key)}: {html.escape(message)}</li>"
            for shard, key, message in shown[kind]
        )
        items.append(f"<h3>{html.escape(kind)}: {count}</h3><ul>{cases}</ul>")
    return "".join(items)


def provenance(model: dict[str, Any]) -> str:
    text = (
        f"{model.get('id', '?')[:16]}… ({model.get('heads', '?')} {model.get('head_size', '?')} heads, "
        f"{model.get('precision', '?')}, {model.get('source', 'source not recorded')})"
    )
    error = model.get("pipeline_error")
    if error:
        text += (
            f"; recorded max |score difference| against full decode and fp32: {error['fast_decode']:.3g} with the "
            f"fast JPEG decode, {error['exact_decode']:.3g} with the exact one"
        )
    if str(model.get("source", "")).startswith("synthetic"):
        text += " — a synthetic model with random weights: these labels show the pipeline works, nothing more"
    return text


def render_html(
    stats: dict[str, Any],
    charts: dict[str, str],
    groups: list[tuple[str, str]],
    gallery: str,
    errors: str,
    output_display: str,
) -> str:
    run = stats["run"]
    model = run.get("model", {})
    facts = [
        ("output", output_display),
        ("model", provenance(model)),
        ("images", run.get("images")),
        ("label rows", run["label_rows"]),
        ("error rows", run.get("errors")),
        ("shards", ", ".join(f"{k} {v}" for k, v in run.get("shards", {}).items())),
        *[(f"not complete: {s['shard']}", f"{s['status']}: {s['reason']}") for s in run.get("not_complete", [])],
        ("generated", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
    ]
    fact_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    group_sections = "".join(
        f'<h3>{html.escape(name)}</h3><img class="chart" src="{uri}" alt="by {html.escape(name)}">'
        for name, uri in groups
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emonet-batch report</title><style>{_STYLE}</style></head>
<body>
<h1>Emotion labels report</h1>
<nav><ol>{"".join(f'<li><a href="#{anchor}">{title}</a></li>' for anchor, title in SECTIONS.items())}</ol></nav>
<section id="run"><h2>Run</h2><table class="facts">{fact_rows}</table></section>
<section id="top-emotions"><h2>Top emotions</h2>
<img class="chart" src="{charts["top"]}" alt="top emotions"></section>
<section id="heads"><h2>Per-head summary</h2>{heads_table(stats)}</section>
<section id="distributions"><h2>Score distributions</h2>
<img class="chart" src="{charts["distributions"]}" alt="distributions"></section>
<section id="correlation"><h2>How emotions co-vary</h2>
<img class="chart" src="{charts["correlation"]}" alt="correlation"></section>
<section id="groups"><h2>Groups</h2>{group_sections or NO_GROUPS}{skipped_groups(stats)}</section>
<section id="errors"><h2>Errors</h2>{errors}</section>
<section id="gallery"><h2>Highest-scoring images per emotion</h2>{gallery}</section>
</body></html>
"""


def saved_stats(fs, output: str) -> dict[str, Any] | None:
    """The output's stats.json; None when there is none or it is damaged (stats are derived: computed again)."""
    try:
        return json_object(fs, join(output, stats_file(STATS_JSON)))
    except (*NOT_FOUND, ValueError):
        return None


def build_report(
    output_url: str, storage: StorageOptions = StorageOptions(), gallery: int = 6, stats: dict[str, Any] | None = None
) -> str:
    """Write <output>/stats/report.html from `stats` (else stats.json, else computed); returns its location."""
    import matplotlib

    matplotlib.use("Agg")  # no display on batch machines
    fs, output = filesystem(output_url, storage)
    stats = stats or saved_stats(fs, output) or compute_stats(output_url, storage)
    charts = {
        "top": top_emotion_chart(stats),
        "distributions": distributions_chart(stats),
        "correlation": correlation_chart(stats),
    }
    commits = committed_shards(fs, output)
    page = render_html(
        stats,
        charts,
        group_charts(stats),
        gallery_html(fs, output, commits, gallery, storage),
        errors_html(fs, output, commits),
        redact_url(output_url),
    )
    path = join(output, stats_file(REPORT_HTML))
    write_bytes(fs, path, page.encode("utf-8"))
    return fs.unstrip_protocol(path) if "://" in output_url else path
