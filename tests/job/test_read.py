import io
import json
import tarfile

import pytest

from emonet_batch.cli import main
from emonet_batch.devtools.samples import encode, face_image
from emonet_batch.devtools.shards import folder_to_shards
from emonet_batch.job.read import parquet_rows, tar_rows


@pytest.fixture
def folder(tmp_path):
    source = tmp_path / "images"
    (source / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "c.v2.jpeg", "sub/a.jpg"):
        fmt = "PNG" if name.endswith("png") else "JPEG"
        (source / name).write_bytes(encode(face_image(len(name), size=48), fmt))
    (source / "notes.txt").write_text("not an image")
    (tmp_path / "meta.csv").write_text("file,gender,age\na.jpg,female,31\nsub/a.jpg,male,40\n")
    return source


def test_folder_to_shards_with_metadata(folder, tmp_path):
    paths = folder_to_shards(folder, tmp_path / "shards", 3, tmp_path / "meta.csv").paths
    assert [p.name for p in paths] == ["shard-00000.tar", "shard-00001.tar"]
    rows = [row for path in paths for row in tar_rows(io.BytesIO(path.read_bytes()), path.stem, path.stat().st_size)]
    samples = [r for r in rows if r["kind"] == "sample"]
    assert [r["key"] for r in samples] == ["a", "b", "c_v2", "sub__a"]
    assert all(r["kind"] != "error" for r in rows) and [r["status"] for r in rows if r["kind"] == "end"] == [
        "complete",
        "complete",
    ]
    assert json.loads(samples[0]["meta"]) == {"age": "31", "gender": "female"}
    assert json.loads(samples[3]["meta"]) == {"age": "40", "gender": "male"}
    assert samples[1]["meta"] is None
    with tarfile.open(paths[0]) as archive:
        names = archive.getnames()
    assert names == ["a.jpg", "a.json", "b.png", "c_v2.jpg"]  # members of a sample are contiguous


def test_shards_written_by_webdataset_clients_read_as_webdataset_groups_them(tmp_path):
    from ..shardkit import CLIENT_KEYS, client_shard

    path = client_shard(tmp_path / "client.tar")
    rows = list(tar_rows(io.BytesIO(path.read_bytes()), "client", path.stat().st_size))
    got = {r["key"]: (r["kind"], r.get("error_type")) for r in rows if r["kind"] != "end"}
    assert got == {read: ("error" if error else "sample", error) for read, error in CLIENT_KEYS.values()}
    assert "keys with dots merge samples" in next(r["message"] for r in rows if r["kind"] == "error")
    assert json.loads(rows[1]["meta"]) == {"gender": "female", "n": 1}  # the json of a dotted key's sample
    assert rows[-1]["status"] == "complete" and rows[-1]["count"] == 4


def test_members_a_sample_does_not_use_are_never_held_in_memory(tmp_path):
    """A corpus that keeps videos or arrays beside its frames: only images and json are read into memory, and a
    shard cut inside a skipped member is still found truncated."""
    import tracemalloc

    jpeg = encode(face_image(1, size=48), "JPEG")
    path = tmp_path / "video.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in (("a.jpg", jpeg), ("a.mp4", bytes(40 << 20)), ("a.json", b'{"n": 1}'), ("b.mp4", b"v")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    tracemalloc.start()
    with open(path, "rb") as stream:
        rows = list(tar_rows(stream, "video", path.stat().st_size))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak  # the 40 MB member passed by, never held
    kinds = [(r["kind"], r.get("error_type")) for r in rows]
    assert kinds == [("sample", None), ("error", "missing_image"), ("end", None)]
    assert rows[0]["meta"] == '{"n": 1}' and "has: mp4" in rows[1]["message"] and rows[-1]["status"] == "complete"
    cut = path.read_bytes()[: 20 << 20]  # inside the skipped member
    assert list(tar_rows(io.BytesIO(cut), "video", len(cut)))[-1]["status"] == "failed"


def test_links_in_a_tar_are_error_rows_and_folders_are_no_samples(tmp_path):
    # what `tar -c` of a folder writes: folder entries, and links where the folder has them
    path = tmp_path / "linked.tar"
    jpeg = encode(face_image(1, size=48), "JPEG")
    with tarfile.open(path, "w") as archive:
        folder = tarfile.TarInfo("faces")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in (("faces/a.jpg", jpeg), ("faces/b.jpg", jpeg), ("faces/b.json", b"{}")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        for name, kind, target in (
            ("faces/c.jpg", tarfile.SYMTYPE, "a.jpg"),
            ("faces/d.jpg", tarfile.LNKTYPE, "faces/a.jpg"),
        ):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, target
            archive.addfile(link)
    rows = list(tar_rows(io.BytesIO(path.read_bytes()), "linked", path.stat().st_size))
    got = {r["key"]: (r["kind"], r.get("error_type")) for r in rows if r["kind"] != "end"}
    assert got == {
        "faces/a": ("sample", None),
        "faces/b": ("sample", None),
        "faces/c": ("error", "not_a_file"),
        "faces/d": ("error", "not_a_file"),
    }
    messages = [r["message"] for r in rows if r["kind"] == "error"]
    assert messages[0].startswith("faces/c.jpg is a symbolic link to a.jpg: a tar's links are not followed")
    assert messages[1].startswith("faces/d.jpg is a hard link to faces/a.jpg")
    assert rows[-1]["status"] == "complete" and rows[-1]["count"] == 4


def test_nested_parquet_columns_are_metadata_when_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = {"bytes": encode(face_image(1, size=48), "JPEG"), "path": "a.jpg"}
    table = pa.table(
        {
            "image": pa.array([image], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "age": [31],
            "tags": [["smile", "outdoor"]],
            "box": [{"x": 1, "y": 2}],
            "clip": [[0.5] * 768],  # a wide column nobody names stays out of each row's metadata
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")

    def metadata(meta_fields):
        with open(tmp_path / "a.parquet", "rb") as stream:
            return json.loads(next(parquet_rows(stream, "a", meta_fields=meta_fields))["meta"])

    assert metadata(()) == {"age": 31}
    assert metadata(("tags", "box")) == {"age": 31, "tags": ["smile", "outdoor"], "box": {"x": 1, "y": 2}}


def test_parquet_columns_no_row_uses_are_never_read(tmp_path):
    """A dataset with a second image column (a mask, the original): only the image the job scores is fetched."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    image = {"bytes": encode(face_image(1, size=48), "JPEG"), "path": "a.jpg"}
    mask = {"bytes": bytes(4 << 20), "path": "a-mask.png"}
    table = pa.table({"image": pa.array([image], kind), "mask": pa.array([mask], kind), "age": [31]})
    pq.write_table(table, tmp_path / "a.parquet", compression="none")

    class Counted(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Counted.read_bytes += len(data)
            return data

        def readinto(self, buffer):
            count = super().readinto(buffer)
            Counted.read_bytes += count
            return count

    rows = list(parquet_rows(Counted((tmp_path / "a.parquet").read_bytes()), "a"))
    assert [r["kind"] for r in rows] == ["sample", "end"] and json.loads(rows[0]["meta"]) == {"age": 31}
    assert Counted.read_bytes < 1 << 20, Counted.read_bytes  # the 4 MB mask column stayed in the file


def test_shards_are_deterministic(folder, tmp_path):
    first = folder_to_shards(folder, tmp_path / "one", 10).paths
    second = folder_to_shards(folder, tmp_path / "two", 10).paths
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_json_metadata_and_cli(folder, tmp_path, capsys):
    (tmp_path / "meta.json").write_text(json.dumps({"b.png": {"ethnicity": "european"}}))
    assert (
        main(
            [
                "shard",
                str(folder),
                "--out",
                str(tmp_path / "s"),
                "--shard-size",
                "2",
                "--metadata",
                str(tmp_path / "meta.json"),
            ]
        )
        == 0
    )
    assert "wrote 4 images in 2 shards, 1 metadata record used" in capsys.readouterr().out
    assert main(["shard", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == f"emonet-batch: error: not a directory: {tmp_path / 'missing'}"


def test_metadata_that_cannot_be_used_is_one_line(folder, tmp_path, capsys):
    def shard(metadata: str, content: bytes) -> tuple[int, str]:
        (tmp_path / metadata).write_bytes(content)
        code = main(["shard", str(folder), "--out", str(tmp_path / "s"), "--metadata", str(tmp_path / metadata)])
        return code, capsys.readouterr().err.strip()

    for name, content, problem in (
        ("half.json", b"{not json", "half.json cannot be read as UTF-8 JSON: Expecting property name"),
        ("list.json", b"[1, 2]", "list.json: every metadata record must be an object, not 1"),
        ("keyed.json", b'{"a.jpg": 3}', "keyed.json: every metadata record must be an object, not 3"),
        ("number.json", b"3", "number.json: metadata is a JSON object keyed by file name or a list of objects"),
        ("latin.csv", b"file,city\na.jpg,M\xfcnchen\n", "latin.csv cannot be read as UTF-8 CSV: 'utf-8' codec"),
    ):
        code, err = shard(name, content)
        assert code == 2 and err.startswith(f"emonet-batch: error: {tmp_path / problem}"), err
    code, err = shard("twice.csv", b"file,age\nb.png,31\nb.png,31\nb.png,40\n")  # the same record twice is one
    assert (
        code == 2
        and err
        == f"emonet-batch: error: {tmp_path}/twice.csv: two metadata records name b.png with different fields; keep one"
    )
    code, err = shard("by-name.csv", b"file,age\na.jpg,31\n")  # images/a.jpg and images/sub/a.jpg
    assert code == 2 and err == (
        f"emonet-batch: error: the metadata record a.jpg names 2 images (a.jpg, sub/a.jpg): name each by its path "
        f"under {folder}"
    )
    assert not (tmp_path / "s").exists()
    code, err = shard("typo.csv", b"file,age\nb.png,31\nz.jpg,40\ny.jpg,50\n")
    assert code == 0 and err == f"warning: 2 metadata records named no image under {folder} (y.jpg, z.jpg)"


def test_shards_of_an_earlier_packing_are_never_left_beside_new_ones(folder, tmp_path, capsys):
    """Packed again with larger shards, the folder's images would be in the old shards too and scored twice."""
    out = tmp_path / "s"
    assert len(folder_to_shards(folder, out, 1).paths) == 4
    (out / "other-00000.tar").write_bytes(b"")  # another prefix is not ours
    assert main(["shard", str(folder), "--out", str(out), "--shard-size", "3"]) == 2
    assert capsys.readouterr().err == (
        f"emonet-batch: error: {out} already holds 4 shards (shard-00000.tar .. shard-00003.tar); pass --overwrite to "
        "replace them\n"
    )
    assert main(["shard", str(folder), "--out", str(out), "--shard-size", "3", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["other-00000.tar", "shard-00000.tar", "shard-00001.tar"]


def test_a_link_to_a_missing_image_is_refused(folder, tmp_path, capsys):
    (folder / "fetched.jpg").symlink_to(folder / "a.jpg")
    (folder / "never-fetched.jpg").symlink_to(tmp_path / "annex" / "missing.jpg")
    assert main(["shard", str(folder), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"emonet-batch: error: 1 image under {folder} is a link to nothing (never-fetched.jpg): fetch their files "
        "or remove the links"
    )
    (folder / "never-fetched.jpg").unlink()
    assert folder_to_shards(folder, tmp_path / "s", 10).images == 5  # a link to an image is that image
