"""The HTML report helpers produce one self-contained file."""

from __future__ import annotations

import base64
import io
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from PIL import Image

from oncosynth.report import html


def test_page_is_self_contained_and_escaped():
    body = html.table([{"metric": "FID <net>", "value": 1.23456}], caption="a & b")
    doc = html.page("Report <1>", body)
    assert doc.startswith("<!DOCTYPE html>")
    assert "<title>Report &lt;1&gt;</title>" in doc
    assert "FID &lt;net&gt;" in doc and "a &amp; b" in doc
    # nothing is fetched from outside the file
    assert not re.search(r'(src|href)="(https?:)?//', doc)
    assert "<link" not in doc and "<script" not in doc


def test_table_columns_union_and_number_format():
    rows = [{"a": 1, "b": 0.000012345}, {"a": 2, "c": "x", "b": -math.inf}]
    out = html.table(rows)
    headers = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", out)
    assert headers == ["a", "b", "c"]
    assert "1.234e-05" in out and "-inf" in out
    assert out.count("<tr>") == 3


def test_figure_embeds_png_and_closes_figure():
    fig, ax = plt.subplots()
    ax.hist([1, 2, 2, 3])
    before = len(plt.get_fignums())
    out = html.figure(fig, caption="hist")
    assert len(plt.get_fignums()) == before - 1
    payload = re.search(r'src="data:image/png;base64,([^"]+)"', out).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "PNG"
    assert "<figcaption>hist</figcaption>" in out


def test_image_grid_layout_and_upscaling():
    images = torch.zeros(5, 1, 8, 8)
    images[2] = 1.0
    out = html.image_grid(images, nrow=3, caption="five")
    payload = re.search(r'src="data:image/png;base64,([^"]+)"', out).group(1)
    pil = Image.open(io.BytesIO(base64.b64decode(payload)))
    scale = 8  # 8 px cells are upscaled to at least 64 px
    assert pil.size == ((3 * 10 + 2) * scale, (2 * 10 + 2) * scale)
    # the third image (row 0, col 2) is white, the first is black
    import numpy as np

    array = np.asarray(pil.convert("RGB"))
    assert array[(2 + 4) * scale, (2 + 2 * 10 + 4) * scale, 0] == 255
    assert array[(2 + 4) * scale, (2 + 4) * scale, 0] == 0
    assert "no images" in html.image_grid(torch.zeros(0, 1, 8, 8))


def test_image_grid_rgb():
    out = html.image_grid(torch.rand(4, 3, 16, 16), nrow=2)
    assert out.startswith("<figure>")
