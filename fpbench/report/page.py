"""The report's document model and its two writers: one self-contained HTML page (figures
embedded as base64 PNG; opens from disk, no network, no JavaScript needed) and Markdown
(figures as PNG files beside it). Both render the same sections, so they say the same."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Text:
    """A paragraph. ``**bold**`` and ``code`` spans are rendered in both formats."""

    text: str


@dataclass(frozen=True)
class Image:
    """A figure saved at ``path`` (relative to the report folder) with its caption."""

    path: str
    caption: str


@dataclass(frozen=True)
class Table:
    """A table; ``caption`` goes above it."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Section:
    """A titled part of the report."""

    title: str
    blocks: list[Text | Image | Table] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #bbb; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #555; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1.2rem; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.caption { font-weight: 600; margin-bottom: .2rem; } code { background: #f3f3f3; padding: 0 .2rem; }
nav ul { columns: 2; } .status-failed { color: #b00; font-weight: 600; }
"""

# Opening the page needs no script. This one only records which images failed to decode and
# what the first (headline) section holds, so a headless browser test can read them from the DOM.
CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var broken = [];
  document.querySelectorAll("img").forEach(function (im) {
    if (!im.complete || im.naturalWidth === 0) broken.push(im.alt || im.src.slice(0, 40));
  });
  var out = document.createElement("div");
  out.id = "image-check";
  out.setAttribute("data-images", String(document.images.length));
  out.setAttribute("data-broken", broken.join("|"));
  // the report leads with its answer: the first section, its verdicts and its table
  var first = document.querySelector("section");
  out.setAttribute("data-first-section", first ? first.id : "");
  out.setAttribute("data-first-text", first ? String(first.innerText.trim().length) : "0");
  out.setAttribute("data-first-rows", first ? String(first.querySelectorAll("tbody tr").length) : "0");
  out.hidden = true;
  document.body.appendChild(out);
});
</script>
"""


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    return str(value)


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.frame.columns)
    body = []
    for row in table.frame.itertuples(index=False):
        cells = []
        for v in row:
            text = _cell(v)
            cls = ' class="status-failed"' if text == "failed" or text.startswith("failed") else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<div class="caption">{_inline_html(table.caption)}</div>' if table.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(sections: list[Section], out: Path, title: str, subtitle: str) -> Path:
    """Write ``out/index.html``, embedding every :class:`Image` (read from ``out/<path>``)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{_inline_html(subtitle)}</p>",
        "<nav><ul>"
        + "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
        + "</ul></nav>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{_inline_html(block.text)}</p>")
            elif isinstance(block, Table):
                parts.append(_table_html(block))
            else:
                data = base64.b64encode((out / block.path).read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(block.path)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>"
                )
        parts.append("</section>")
    parts.append(CHECK_SCRIPT + "</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_md(table: Table) -> str:
    cols = [str(c) for c in table.frame.columns]
    lines = ["| " + " | ".join(map(_md_escape, cols)) + " |", "|" + "---|" * len(cols)]
    for row in table.frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_escape(_cell(v)) for v in row) + " |")
    caption = f"**{table.caption}**\n\n" if table.caption else ""
    return caption + "\n".join(lines)


def write_markdown(sections: list[Section], out: Path, title: str, subtitle: str) -> Path:
    """Write ``out/summary.md``; figures are linked as the PNG files in ``out/figures/``."""
    parts = [f"# {title}", subtitle]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(block.text)
            elif isinstance(block, Table):
                parts.append(_table_md(block))
            else:
                parts.append(f"![{block.caption}]({block.path})\n\n*{block.caption}*")
    path = out / "summary.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path
