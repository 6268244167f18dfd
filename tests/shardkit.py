"""Builders for test shards: good faces, every kind of bad sample, truncated tars, Parquet shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from emonet_batch.devtools.benchmark import unit_embeddings
from emonet_batch.devtools.samples import demo_samples, encode, face_image
from emonet_batch.devtools.shards import write_shards

#: The object-storage tests' secret key: it must appear in no output, log or file.
CANARY = "canary-Secret-7f3a9c1e5b"
#: Their credentials, for the moto server; conftest puts them in the session's environment.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "emonet-test-key",
    "AWS_SECRET_ACCESS_KEY": CANARY,
    "AWS_DEFAULT_REGION": "us-east-1",
}


def good_shards(directory: Path, shards: int, per_shard: int, size: int = 96) -> list[Path]:
    return write_shards(demo_samples(shards * per_shard, size=size), directory, per_shard)


def odd_samples() -> list[tuple[str, dict[str, bytes]]]:
    """One sample per odd case, in this order; EXPECTED_ERRORS says which become error rows."""
    face = face_image(5, size=128)
    exif = Image.Exif()
    exif[0x0112] = 6
    sixteen = Image.fromarray(np.asarray(face.convert("L"), dtype=np.uint16) * 257)
    jpeg = encode(face, "JPEG", quality=90)
    return [
        ("good", {"jpg": jpeg, "json": json.dumps({"gender": "female", "age": 30}).encode()}),
        ("corrupt", {"jpg": jpeg[: len(jpeg) // 3]}),
        ("zero", {"jpg": b""}),
        ("noimage", {"json": b'{"gender": "male"}', "txt": b"caption only"}),
        ("notimage", {"jpg": b"GIF89? this is text, not an image"}),
        ("badjson", {"jpg": jpeg, "json": b"{not json"}),
        ("huge", {"png": encode(Image.new("RGB", (700, 700), (10, 200, 10)), "PNG")}),
        ("grey", {"jpg": encode(face.convert("L"), "JPEG")}),
        ("cmyk", {"jpg": encode(face.convert("CMYK"), "JPEG")}),
        ("rgba", {"png": encode(face.convert("RGBA"), "PNG")}),
        ("sixteen", {"png": encode(sixteen, "PNG")}),
        ("rotated", {"jpg": encode(face, "JPEG", exif=exif.tobytes())}),
        ("webp", {"webp": encode(face, "WEBP")}),
    ]


#: key -> (stage, error_type) for odd_samples() scored with max_pixels below 700*700.
EXPECTED_ERRORS = {
    "corrupt": ("decode", "corrupt"),
    "zero": ("decode", "empty"),
    "noimage": ("read", "missing_image"),
    "notimage": ("decode", "not_an_image"),
    "badjson": ("read", "bad_metadata"),
    "huge": ("decode", "too_many_pixels"),
}
MAX_PIXELS = 600 * 600


def client_shard(path: Path) -> Path:
    """A shard as a WebDataset client writes it with webdataset's TarWriter and its default encoder (PIL images,
    dicts, ints and strings): keys with folders and dots, `.cls` and `.txt` members. CLIENT_KEYS says how each
    sample reads back."""
    from webdataset import TarWriter

    with TarWriter(str(path)) as writer:
        for index, key in enumerate(CLIENT_KEYS):
            face = face_image(20 + index, size=72)
            writer.write(
                {"__key__": key, "jpg": face, "json": {"gender": "female", "n": index}, "cls": index, "txt": key}
            )
    return path


#: key written -> key read and, for an error row, its type: a key runs to the first dot of a member's name, so
#: `0002.v2` reads as `0002` with a `v2.jpg` field (scored), and two contiguous keys sharing the part before the
#: dot merge into one sample with two images (an error row, never one label for two faces).
CLIENT_KEYS = {
    "faces/a/0001": ("faces/a/0001", None),
    "faces/b/0002.v2": ("faces/b/0002", None),
    "faces/c/0003.left": ("faces/c/0003", "duplicate_key"),
    "faces/c/0003.right": ("faces/c/0003", "duplicate_key"),
    "faces/d/0004": ("faces/d/0004", None),
}


def truncate(path: Path, keep_fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def parquet_shard(path: Path, count: int) -> Path:
    """A shard in the Hugging Face `Image` layout: image struct {bytes, path} plus metadata columns."""
    images = [{"bytes": encode(face_image(i, size=96), "JPEG"), "path": f"img_{i:04d}.jpg"} for i in range(count)]
    images[1] = {"bytes": None, "path": "img_0001.jpg"}  # a row without bytes
    table = pa.table(
        {
            "image": pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "emotion": pa.array([f"e{i % 3}" for i in range(count)]),
            "age": pa.array(list(range(20, 20 + count))),
        }
    )
    pq.write_table(table, path)
    return path


def read_labels(output: Path) -> pa.Table:
    return pq.read_table(output / "labels")


def manifest(output: Path) -> dict:
    return json.loads((output / "manifest.json").read_text())


def shard_outcomes(output: Path) -> dict[str, dict]:
    """The last run's outcome of each shard (the manifest's shard table), by shard id."""
    rows = pq.read_table(output / "manifest.shards.parquet").to_pylist()
    return {row.pop("shard"): {**row, "error_types": json.loads(row["error_types"])} for row in rows}


def run_history(output: Path) -> list[dict]:
    return pq.read_table(output / "manifest.runs.parquet").to_pylist()


def commit_by_hand(output: Path, shard: str, table: pa.Table, **record) -> None:
    """A label file and its commit record (naming the file's sha256), as a run would leave them."""
    import hashlib

    for folder in ("labels", "_commits"):
        (output / folder).mkdir(parents=True, exist_ok=True)
    path = output / "labels" / f"{shard}.parquet"
    pq.write_table(table, path)
    files = {f"labels/{shard}.parquet": hashlib.sha256(path.read_bytes()).hexdigest()}
    (output / "_commits" / f"{shard}.json").write_text(json.dumps({"shard": shard, "files": files, **record}))


def model_inputs(info, rng: np.random.Generator, count: int) -> np.ndarray:
    """Random inputs of a model: pixels, or unit-length embeddings for a heads-only model."""
    if info.heads_only:
        return unit_embeddings(rng, count, info.embedding_dim)
    return rng.integers(0, 256, (count, info.image_size, info.image_size, 3), dtype=np.uint8)


def assert_scores_independent_of_the_batch(model_dir: Path) -> None:
    """An input's scores and embedding are bit-identical alone, in a batch of 32, and among 7 other inputs."""
    from emonet_batch.job.infer import OnnxScorer, SessionOptions
    from emonet_batch.model.record import load_model_info

    info = load_model_info(model_dir)
    scorer = OnnxScorer(info, SessionOptions(intra_op_threads=2))
    rng = np.random.default_rng(0)
    pixels = model_inputs(info, rng, 32)
    alone = [scorer.run(pixels[i : i + 1]) for i in range(len(pixels))]
    batch = scorer.run(pixels)
    others = scorer.run(np.concatenate([model_inputs(info, rng, 7), pixels[:1]]))
    for output in (0, 1):
        assert np.array_equal(np.concatenate([a[output] for a in alone]), batch[output])
        assert np.array_equal(others[output][-1:], alone[0][output])
