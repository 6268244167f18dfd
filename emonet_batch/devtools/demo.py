"""`emonet-batch demo`: the whole product on the embedded default, in a minute or two.

Writes sample shards of generated faces with EmoNet-style metadata, exports a tiny synthetic model if
there is none, scores the shards with the real job (local Ray, local files) and says where it all is.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ..analysis.summary import format_table, run_summary
from ..errors import ModelError
from ..job.layout import COMMITS, KEY, LABELS, MANIFEST, REPORT_HTML, STATS, STATS_JSON, TOP_EMOTION, TOP_PROB
from ..model.record import ModelInfo, load_model_info
from ..run.config import score_config
from ..run.score import run_score
from .samples import demo_samples
from .shards import write_shards

DEMO_SHARDS, DEMO_PER_SHARD = 4, 24
DEMO_FIELDS = ("gender", "age", "ethnicity")


def demo_model(model_dir: Path) -> ModelInfo:
    """The demo's tiny synthetic model: reused when already exported and intact, exported otherwise."""
    try:
        return load_model_info(model_dir)
    except ModelError:
        from ..export import ExportConfig, export_model

        export_model(ExportConfig(out=model_dir, synthetic="tiny", head_size="large", overwrite=True))
        return load_model_info(model_dir)


def demo_shards(directory: Path, shards: int, per_shard: int) -> list[Path]:
    existing = sorted(directory.glob("shard-*.tar"))
    if len(existing) == shards:
        return existing
    return write_shards(demo_samples(shards * per_shard), directory, per_shard)


def run_demo(
    root: Path, shards: int = DEMO_SHARDS, per_shard: int = DEMO_PER_SHARD, progress: str = "auto"
) -> tuple[str, int]:
    """Run the demo under `root`; returns (the text to print, the job's exit code)."""
    shard_paths = demo_shards(root / "shards", shards, per_shard)
    info = demo_model(root / "model")
    output = root / "out"
    config = score_config(
        (str(root / "shards"),), str(output), str(info.directory), meta_fields=DEMO_FIELDS, progress=progress
    )
    result = run_score(config)
    return "\n".join([run_summary(result), "", sample_rows(output), "", where(root, shard_paths)]), result.exit_code


def sample_rows(output: Path, count: int = 6) -> str:
    table = pq.read_table(output / LABELS, columns=[KEY, TOP_EMOTION, TOP_PROB, "valence", *DEMO_FIELDS])
    rows = table.slice(0, count).to_pylist()
    return format_table(
        ("key", "top emotion", "p", "valence (raw)", *DEMO_FIELDS),
        [
            (r[KEY], r[TOP_EMOTION], f"{r[TOP_PROB]:.3f}", f"{r['valence']:.2f}", *(r[f] for f in DEMO_FIELDS))
            for r in rows
        ],
    )


def where(root: Path, shard_paths: list[Path]) -> str:
    out = root / "out"
    return "\n".join(
        [
            f"input shards   {root / 'shards'} ({len(shard_paths)} WebDataset tars of generated faces with metadata)",
            f"model          {root / 'model'} "
            "(tiny random-weight SigLIP tower + 44 Large heads; `emonet-batch info` shows it)",
            f"labels         {out / LABELS} (one Parquet per shard)",
            f"commits        {out / COMMITS}; run summary in {out / MANIFEST}",
            f"stats          {out / STATS} ({STATS_JSON} + Parquet tables)",
            f"report         {out / STATS / REPORT_HTML} (open it in a browser)",
            "The model has random weights: the labels show the pipeline works, not what the faces feel.",
        ]
    )
