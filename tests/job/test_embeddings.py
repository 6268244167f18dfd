import json
import math

import pyarrow as pa

from emonet_batch.job.commit import meta_columns
from emonet_batch.job.embeddings import meta_texts


def per_row_json(table: pa.Table, fields: tuple[str, ...]) -> list[str]:
    present = [name for name in fields if name in table.column_names]
    columns = {name: table.column(name).to_pylist() for name in present}
    return [json.dumps({name: columns[name][i] for name in present}) for i in range(table.num_rows)]


def test_meta_texts_are_each_rows_json_of_the_promoted_fields():
    table = pa.table(
        {
            "gender": pa.chunked_array(
                [pa.array(["f", "m"]).dictionary_encode(), pa.array(['q"x', None]).dictionary_encode()]
            ),
            "age": pa.array([31, None, 31, 7]),
            "weight": pa.array([1.5, math.nan, None, 1.5]),
            "ok": pa.array([True, False, None, True]),
            "tags": pa.array([["a"], [], None, ["b", "c"]]),
        }
    )
    fields = ("gender", "absent", "age", "weight", "ok", "tags")

    texts = meta_texts(table, fields).to_pylist()

    assert texts == per_row_json(table, fields)
    assert texts[1] == '{"gender": "m", "age": null, "weight": NaN, "ok": false, "tags": []}'


def test_meta_texts_without_promoted_fields_are_empty_objects():
    assert meta_texts(pa.table({"key": ["a", "b"]}), ("absent",)).to_pylist() == ["{}", "{}"]


def test_meta_columns_parse_each_rows_json_once_whatever_it_holds():
    meta = ['{"age": 3, "gender": "f"}', None, '{"age": "old"}', "[1, 2]", '{"gender": {"x": 1}}']

    columns = meta_columns(meta, ("age", "gender", "absent"))

    assert columns["age"].to_pylist() == ["3", None, "old", None, None]  # mixed types: strings
    assert columns["gender"].to_pylist() == ["f", None, None, None, '{"x": 1}']
    assert columns["absent"].to_pylist() == [None] * 5
