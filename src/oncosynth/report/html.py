"""Self-contained HTML pages: inline CSS, images as base64 PNG, no external assets.

The toolkit behind every HTML page the project writes (the study page, ``oncosynth.study.page``;
the evaluation page, ``oncosynth.metrics.page``). A page is built by concatenating fragments
(``section``, ``paragraph``, ``table``, ``figure``, ``image_grid``, ``block``, ``numbered_list``)
and wrapping them with ``page``. The file can be mailed or archived on its own: nothing is
fetched when it is opened.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Iterable, Sequence

import torch
from PIL import Image

from oncosynth.io import grid_array, tensor_to_uint8

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; padding: 0 16px; color: #1d2330; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #3b6ea8; padding-bottom: 6px; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2a4f7a; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.92em; display: block; max-width: 100%; overflow-x: auto; }
caption { text-align: left; font-weight: 600; padding: 4px 0; color: #444; }
th, td { border: 1px solid #cdd4de; padding: 4px 10px; text-align: right; }
th { background: #eef2f7; }
td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #f8fafc; }
figure { margin: 10px 0 18px; display: inline-block; vertical-align: top; }
figcaption { font-size: 0.88em; color: #444; margin-top: 4px; max-width: 100%; }
img.grid { image-rendering: pixelated; border: 1px solid #cdd4de; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 8px 0; }
.muted { color: #666; font-size: 0.88em; }
code, pre { background: #f3f5f8; padding: 1px 4px; border-radius: 3px; }
"""


def escape(text: Any) -> str:
    return html.escape(str(text))


def page(title: str, body_html: str) -> str:
    """Wrap body fragments into one complete HTML document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{body_html}\n</body>\n</html>\n"
    )


def _format_cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "-inf" if value < 0 else "inf"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], caption: str | None = None) -> str:
    """Rows of dicts -> an HTML table; columns are the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    numeric = {c: all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                      for r in rows if r.get(c) is not None) for c in columns}
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    text_cls = ' class="text"'
    parts.append("<thead><tr>" + "".join(
        f"<th{'' if numeric[c] else text_cls}>{escape(c)}</th>" for c in columns) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        cells = []
        for c in columns:
            cells.append(f"<td{'' if numeric[c] else text_cls}>{escape(_format_cell(row.get(c)))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _png_data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def figure(fig: Any, caption: str | None = None, dpi: int = 100) -> str:
    """A matplotlib figure -> inline <img> (base64 PNG). The figure is closed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_png_data_uri(buffer.getvalue())}" alt="{escape(caption or "figure")}">{cap}</figure>'


def image_grid(images: torch.Tensor, nrow: int = 8, caption: str | None = None,
               max_width: int = 1000, min_cell: int = 64) -> str:
    """N×C×H×W float [0, 1] -> inline <img> of a grid, upscaled (nearest) so small images stay visible."""
    if images.ndim != 4 or images.shape[0] == 0:
        return f"<p class=\"muted\">(no images{': ' + escape(caption) if caption else ''})</p>"
    grid = grid_array(images, nrow=nrow)
    pil = Image.fromarray(tensor_to_uint8(grid))
    h, w = images.shape[-2:]
    scale = max(1, math.ceil(min_cell / max(h, w)))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=True)
    width = min(pil.width, max_width)
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img class="grid" width="{width}" src="{_png_data_uri(buffer.getvalue())}" '
            f'alt="{escape(caption or "images")}">{cap}</figure>')


def section(heading: str, *fragments: str | Iterable[str], level: int = 2) -> str:
    """A heading followed by fragments (strings or lists of strings)."""
    body = []
    for fragment in fragments:
        body.extend([fragment] if isinstance(fragment, str) else list(fragment))
    return f"<h{level}>{escape(heading)}</h{level}>\n" + "\n".join(body)


def paragraph(text: str, cls: str | None = None) -> str:
    """Escaped text in a <p> (``cls`` e.g. 'note' or 'muted')."""
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{escape(text)}</p>"


def block(*fragments: str) -> str:
    """Fragments side by side in one <div> (e.g. a row of image grids)."""
    return "<div>" + "".join(fragments) + "</div>"


def numbered_list(items: Iterable[Any], cls: str | None = None) -> str:
    """Escaped items in an <ol> (``cls`` e.g. 'muted')."""
    attr = f' class="{cls}"' if cls else ""
    return f"<ol{attr}>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ol>"
