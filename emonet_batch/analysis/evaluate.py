"""Evaluate stage: agreement of committed labels with the EmoNet-Face expert annotations.

- binary (binary.csv: path, annotator, value, emotion): per emotion, ROC-AUC of the model score against the
  majority expert vote (ties dropped), and the mean over emotions.
- hq (hq.csv: image, annotator, annotations = "{'Family|Emotion': 0..7}", human): per emotion, Spearman rho
  between the model score and the median expert rating, averaged over emotions with a bootstrap 95% CI
  (images resampled); quadratic-weighted Cohen's kappa between the model (scores rounded, clipped to 0..7) and
  each expert, averaged; for reference the human-human kappa and Krippendorff's alpha (interval).

Key -> annotation id rule (documented, overridable with a regex): the sample key's last path component is
used as is when it is an annotation id; otherwise its last run of digits is matched to the annotation id of the
same number (the Binary set's ids are 5-digit strings such as 00042, so `00042`, `42`, `img-42` and
img2dataset's `00000/000000042` all match it).
Statistics come from scipy, scikit-learn and krippendorff; this module only shapes the data.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DownloadError, UsageError, first_line
from ..job.config import StorageOptions
from ..job.layout import KEY, stats_file
from ..job.storage import NOT_FOUND, filesystem, join, redact_url, write_bytes
from ..job.verify import committed_shards
from ..model.taxonomy import EMOTION_COLUMNS, canonical_label, column_name
from .stats import json_ready, label_batches

RATING_MAX = 7


@dataclass(frozen=True)
class EvaluateConfig:
    labels: str
    annotations: str
    format: str | None = None  # hq | binary; None: from the columns
    key_pattern: str | None = None  # regex with one group: the annotation id inside a sample key
    bootstrap: int = 1000
    seed: int = 0
    storage: StorageOptions = StorageOptions()


# --- inputs -------------------------------------------------------------------------------------


def load_annotations(source: str, storage: StorageOptions):
    """A DataFrame from a CSV path/URL, or a Hugging Face dataset id (hf://owner/name or owner/name)."""
    if source.startswith("hf://") or (re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.endswith(".csv")):
        return _hub_annotations(source.removeprefix("hf://"))
    fs, path = filesystem(source, storage)
    try:
        with fs.open(path, "rb") as handle:
            return pd.read_csv(handle, dtype=str, keep_default_na=False)
    except NOT_FOUND:
        raise UsageError(f"annotations not found: {redact_url(source)}") from None
    except IsADirectoryError:
        raise UsageError(f"annotations are a directory, not a CSV file: {redact_url(source)}") from None
    except ValueError as exc:  # pandas' parser and empty-file errors, bytes that are not UTF-8 text
        raise UsageError(f"annotations {redact_url(source)} are not a CSV table: {first_line(exc)}") from None


#: Seconds the one probe of the hub may take before a hub dataset counts as unreachable.
HUB_PROBE_TIMEOUT_S = 10


def _hub_annotations(dataset_id: str):
    import datasets

    _probe_hub(dataset_id)
    try:
        data = datasets.load_dataset(dataset_id, split="train")
    except (ConnectionError, OSError, ValueError) as exc:
        raise DownloadError(
            f"cannot load the dataset {dataset_id} from the Hugging Face hub (offline?): {type(exc).__name__}"
        ) from None
    frame = data.remove_columns([c for c, f in data.features.items() if type(f).__name__ == "Image"]).to_pandas()
    return frame.astype(str)


def _probe_hub(dataset_id: str) -> None:
    """One request to the hub before loading: unreachable, it fails at once. datasets would otherwise retry
    every file request with backoff (seen here: 25 s before its error). With HF_HUB_OFFLINE set there is no
    probe, and a cached copy loads."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().dataset_info(dataset_id, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # no network, DNS, HTTP 401/404: all mean the dataset cannot be fetched now
        raise DownloadError(
            f"cannot reach the dataset {dataset_id} on the Hugging Face hub ({type(exc).__name__}); pass a local "
            "CSV, or set HF_HUB_OFFLINE=1 to use a cached copy"
        ) from None


#: The columns each annotation format needs.
FORMAT_COLUMNS = {"binary": ("path", "annotator", "value", "emotion"), "hq": ("image", "annotator", "annotations")}


def detect_format(columns) -> str:
    for kind, needed in FORMAT_COLUMNS.items():
        if set(needed) <= set(columns):
            return kind
    raise UsageError(f"cannot tell the annotation format from the columns {sorted(columns)}; pass --format hq|binary")


def load_predictions(labels_url: str, storage: StorageOptions):
    """Committed label rows: key and every emotion column present (one DataFrame)."""
    fs, output = filesystem(labels_url, storage)
    frames = []
    for batch in label_batches(fs, output, committed_shards(fs, output)):
        columns = [KEY] + [c for c in EMOTION_COLUMNS if c in batch.schema.names]
        frames.append(batch.select(columns).to_pandas())
    return pd.concat(frames, ignore_index=True)


def check_key_pattern(pattern: str | None) -> None:
    """--key-pattern must be a regex whose first group is the annotation id."""
    if pattern is None:
        return
    try:
        groups = re.compile(pattern).groups
    except re.error as exc:
        raise UsageError(f"--key-pattern {pattern!r} is not a regular expression: {exc}") from None
    if not groups:
        raise UsageError(f"--key-pattern {pattern!r} has no group: put ( ) around the annotation id, e.g. '(\\d+)'")


def annotation_ids(keys, known_ids: set[str], pattern: str | None) -> list[str | None]:
    """Map sample keys to annotation image ids (see the module docstring for the rule)."""
    by_number = {int(i): i for i in known_ids if i.isdigit()}
    regex = re.compile(pattern) if pattern else None
    out = []
    for key in keys:
        base = str(key).rsplit("/", 1)[-1]
        if regex is not None:
            match = regex.search(str(key))
            out.append(match.group(1) if match else None)
        elif base in known_ids:
            out.append(base)
        else:
            digits = re.findall(r"\d+", base)
            out.append(by_number.get(int(digits[-1])) if digits else None)
    return out


def joined_scores(predictions, known_ids: set[str], pattern: str | None):
    predictions = predictions.assign(image=annotation_ids(predictions["key"], known_ids, pattern))
    matched = predictions[predictions["image"].isin(known_ids)]
    if matched.empty:
        raise UsageError("no label key matches an annotation image id; check the keys or pass --key-pattern")
    return matched.drop_duplicates("image").set_index("image")


# --- binary ---------------------------------------------------------------------------------------


def majority_votes(annotations):
    """image x emotion column -> True/False majority vote of the experts; ties dropped."""
    frame = annotations.assign(
        emotion=[column_name(canonical_label(e)) for e in annotations["emotion"]],
        vote=annotations["value"].astype(str).str.lower().isin(["true", "1", "yes"]).astype(float),
    )
    mean = frame.groupby(["path", "emotion"])["vote"].mean()
    return (mean[mean != 0.5] > 0.5).rename("positive").reset_index()


def evaluate_binary(annotations, predictions, pattern: str | None) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    votes = majority_votes(annotations)
    scores = joined_scores(predictions, set(votes["path"]), pattern)
    rows = []
    for emotion, group in votes.groupby("emotion", sort=False):
        group = group[group["path"].isin(scores.index)]
        if emotion not in scores.columns or group.empty:
            continue
        positive = int(group["positive"].sum())
        auc = (
            float(roc_auc_score(group["positive"], scores.loc[group["path"], emotion]))
            if 0 < positive < len(group)
            else float("nan")
        )
        rows.append({"emotion": emotion, "images": len(group), "positives": positive, "auc": auc})
    rows.sort(key=lambda r: EMOTION_COLUMNS.index(r["emotion"]))
    aucs = [r["auc"] for r in rows if not np.isnan(r["auc"])]
    return {
        "format": "binary",
        "annotated_images": int(votes["path"].nunique()),
        "images_matched": int(len(scores)),
        "per_emotion": rows,
        "summary": {"mean_auc": float(np.mean(aucs)) if aucs else float("nan"), "emotions": len(aucs)},
    }


# --- hq ---------------------------------------------------------------------------------------------


def expert_ratings(annotations):
    """Long table (image, annotator, emotion column, rating) of the human rows."""
    if "human" in annotations.columns:  # rows with human false are other models' ratings
        annotations = annotations[annotations["human"].astype(str).str.lower().isin(["true", "1", "yes"])]
    human = annotations
    records = []
    for image, annotator, text in zip(human["image"], human["annotator"], human["annotations"]):
        for name, rating in ast.literal_eval(text).items():
            records.append(
                (str(image), str(annotator), column_name(canonical_label(name.split("|")[-1])), float(rating))
            )
    return pd.DataFrame(records, columns=["image", "annotator", "emotion", "rating"])


def evaluate_hq(annotations, predictions, pattern: str | None, bootstrap: int, seed: int) -> dict[str, Any]:
    import krippendorff
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    ratings = expert_ratings(annotations)
    annotated = int(ratings["image"].nunique())
    scores = joined_scores(predictions, set(ratings["image"]), pattern)
    ratings = ratings[ratings["image"].isin(scores.index) & ratings["emotion"].isin(scores.columns)]
    medians = ratings.pivot_table(index="image", columns="emotion", values="rating", aggfunc="median")
    emotions = [e for e in EMOTION_COLUMNS if e in medians.columns]
    model = scores.loc[medians.index, emotions]
    rows = []
    for emotion in emotions:
        per_image = ratings[ratings["emotion"] == emotion]
        wide = per_image.pivot_table(index="annotator", columns="image", values="rating", aggfunc="first")
        model_rating = np.clip(np.rint(scores[emotion]), 0, RATING_MAX)
        kappas = [_kappa(cohen_kappa_score, row.dropna(), model_rating) for _, row in wide.iterrows()]
        humans = [
            _kappa(cohen_kappa_score, a.dropna(), b.dropna())
            for (_, a), (_, b) in itertools.combinations(wide.iterrows(), 2)
        ]
        rows.append(
            {
                "emotion": emotion,
                "images": int(medians[emotion].notna().sum()),
                "spearman": float(spearmanr(model[emotion], medians[emotion], nan_policy="omit").statistic),
                "kappa_model_expert": _nanmean(kappas),
                "kappa_human_human": _nanmean(humans),
                "krippendorff_alpha": _alpha(krippendorff, wide),
            }
        )
    rhos = np.array([r["spearman"] for r in rows])
    low, high = bootstrap_mean_rho(model.to_numpy(), medians[emotions].to_numpy(), bootstrap, seed)
    return {
        "format": "hq",
        "annotated_images": annotated,
        "images_matched": int(len(medians)),
        "experts": int(ratings["annotator"].nunique()),
        "per_emotion": rows,
        "summary": {
            "mean_spearman": _nanmean(rhos),
            "mean_spearman_ci95": [low, high],
            "mean_kappa_model_expert": _nanmean([r["kappa_model_expert"] for r in rows]),
            "mean_kappa_human_human": _nanmean([r["kappa_human_human"] for r in rows]),
            "mean_krippendorff_alpha": _nanmean([r["krippendorff_alpha"] for r in rows]),
            "emotions": int(np.sum(~np.isnan(rhos))),
        },
    }


def bootstrap_mean_rho(model: np.ndarray, medians: np.ndarray, rounds: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean-over-emotions Spearman rho, resampling images."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    means = []
    for _ in range(rounds):
        rows = rng.integers(0, len(model), len(model))
        rhos = [spearmanr(model[rows, e], medians[rows, e], nan_policy="omit").statistic for e in range(model.shape[1])]
        means.append(np.nanmean(rhos) if not np.all(np.isnan(rhos)) else np.nan)
    if not rounds or np.all(np.isnan(means)):
        return float("nan"), float("nan")
    return float(np.nanpercentile(means, 2.5)), float(np.nanpercentile(means, 97.5))


def _kappa(score, first, second) -> float:
    shared = first.index.intersection(second.index)
    if len(shared) < 2:
        return float("nan")
    a, b = first.loc[shared].astype(int), second.loc[shared].astype(int)
    if a.nunique() == 1 and b.nunique() == 1:
        return float("nan")  # undefined without variation
    return float(score(a, b, weights="quadratic", labels=list(range(RATING_MAX + 1))))


def _alpha(krippendorff, wide) -> float:
    if wide.shape[0] < 2 or np.nanstd(wide.to_numpy(dtype=float)) == 0:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=wide.to_numpy(dtype=float), level_of_measurement="interval"))


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


# --- the whole evaluation -----------------------------------------------------------------------


def run_evaluate(config: EvaluateConfig) -> tuple[dict[str, Any], str]:
    """Evaluate, write <labels>/stats/evaluate-<format>.json; returns (result, markdown table)."""
    check_key_pattern(config.key_pattern)
    annotations = load_annotations(config.annotations, config.storage)
    kind = config.format or detect_format(annotations.columns)
    missing = [c for c in FORMAT_COLUMNS.get(kind, ()) if c not in annotations.columns]
    if missing:
        raise UsageError(
            f"--format {kind} needs the columns {', '.join(missing)}, which the annotations lack "
            f"(they have {', '.join(map(str, annotations.columns))}); leave --format out to detect it"
        )
    predictions = load_predictions(config.labels, config.storage)
    if kind == "binary":
        result = evaluate_binary(annotations, predictions, config.key_pattern)
    elif kind == "hq":
        result = evaluate_hq(annotations, predictions, config.key_pattern, config.bootstrap, config.seed)
    else:
        raise UsageError(f"unknown annotation format {kind!r}; choose hq or binary")
    annotated = result.pop("annotated_images")
    result = json_ready(
        {
            "annotations": config.annotations,
            "images_scored": int(len(predictions)),
            **result,
            "annotated_images_unmatched": annotated - result["images_matched"],
        }
    )
    fs, output = filesystem(config.labels, config.storage)
    path = join(output, stats_file(f"evaluate-{kind}.json"))
    write_bytes(fs, path, json.dumps(result, indent=1).encode())
    result["written_to"] = fs.unstrip_protocol(path) if "://" in config.labels else path
    return result, markdown(result)


def markdown(result: dict[str, Any]) -> str:
    rows = result["per_emotion"]
    columns = [c for c in rows[0] if c != "emotion"] if rows else []
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| emotion | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {r['emotion']} | " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    summary = ", ".join(
        f"{k} {fmt(v) if not isinstance(v, list) else '[' + ', '.join(fmt(x) for x in v) + ']'}"
        for k, v in result["summary"].items()
    )
    counts = (
        f"{result['images_matched']} of {result['images_scored']} scored images matched an annotated image; "
        f"{result['annotated_images_unmatched']} annotated images had no label"
    )
    notes = [f"**{result['format']}** on {result['images_matched']} images: {summary}", counts]
    if any(r[c] is None for r in rows for c in columns):
        notes.append("n/a: not computable from the matched images (one class only, or no spread in the ratings)")
    return "\n".join(lines + ["", *notes])
