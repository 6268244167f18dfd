"""The report parsed as HTML: every section present, every embedded image decodes."""

import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from emonet_batch.analysis.report import build_report, cluster_order, short_lines
from emonet_batch.devtools.shards import write_shards

from .test_stats import write_labels


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.headings, self._in_h3 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append((attrs.get("src", ""), attrs.get("alt", "")))
        self._in_h3 = tag == "h3"

    def handle_data(self, data):
        if self._in_h3:
            self.headings.append(data)
            self._in_h3 = False


def decode(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.mark.slow
def test_report_sections_images_and_gallery(tmp_path):
    frame = write_labels(tmp_path, shards=2, rows=30)
    # real shards behind the label keys, so the gallery can read thumbnails back
    from emonet_batch.devtools.samples import encode, face_image

    for shard, group in frame.groupby("shard"):
        paths = write_shards(
            [(key, {"jpg": encode(face_image(i, 64), "JPEG")}) for i, key in enumerate(group["key"])],
            tmp_path / "in",
            samples_per_shard=100,
            prefix=shard,
        )
        record = json.loads((tmp_path / "_commits" / f"{shard}.json").read_text())
        (tmp_path / "_commits" / f"{shard}.json").write_text(json.dumps({**record, "input": str(paths[0])}))
    location = build_report(str(tmp_path), gallery=3)
    page = Page()
    text = open(location, encoding="utf-8").read()
    page.feed(text)
    assert all(f'href="#{anchor}"' in text for anchor in page.sections)  # the table of contents
    assert "<th>p95</th>" in text and "No error rows" in text and "<br>raw " in text
    assert page.sections == [
        "run",
        "top-emotions",
        "heads",
        "distributions",
        "correlation",
        "groups",
        "errors",
        "gallery",
    ]
    charts = [src for src, alt in page.images if src.startswith("data:image/png")]
    assert len(charts) == 5  # top, distributions, correlation, gender, age
    for src, _ in page.images:
        image = decode(src)
        image.load()
        assert image.width > 50
    thumbnails = [alt for src, alt in page.images if src.startswith("data:image/jpeg")]
    top_angry = frame.sort_values("anger", ascending=False, kind="stable")["key"].head(3).tolist()
    assert len(thumbnails) == 3 * 40
    assert "Anger" in page.headings
    start = page.headings.index("Anger") - page.headings.index("Amusement")
    assert thumbnails[3 * start : 3 * start + 3] == top_angry
    text = open(location, encoding="utf-8").read()
    assert 'src="http' not in text and "<link" not in text and "<script" not in text  # self-contained


def test_cluster_order_groups_correlated_columns():
    import numpy as np

    matrix = np.array([[1, 0.9, 0, 0], [0.9, 1, 0, 0], [0, 0, 1, 0.8], [0, 0, 0.8, 1]], dtype=float)
    order = list(cluster_order(matrix))
    assert abs(order.index(0) - order.index(1)) == 1 and abs(order.index(2) - order.index(3)) == 1


def test_plot_titles_break_between_words_and_after_slashes():
    assert short_lines("Thankfulness/Gratitude", 20) == "Thankfulness/\nGratitude"
    assert short_lines("Intoxication/Altered States of Consciousness", 20) == (
        "Intoxication/\nAltered States of\nConsciousness"
    )
    assert short_lines("Doubt", 20) == "Doubt"
