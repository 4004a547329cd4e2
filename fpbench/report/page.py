"""The report's document model and its writers: one self-contained HTML page (figures
embedded as base64 PNG; opens from disk, no network, no JavaScript needed) and Markdown
(figures as PNG files beside it), which render the same sections, so they say the same, and
the CSV table.

Every text may carry fields of the results, which come from other machines: each writer
escapes them for its format, so a field is shown as it is and never becomes markup (HTML,
Markdown, a table row or a spreadsheet formula). The only markup is the blocks' own
``**bold**`` and ``code`` spans."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import fmt


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


@dataclass(frozen=True)
class Details:
    """Blocks shown collapsed behind ``summary`` in HTML (``<details>``); in Markdown the
    summary is a bold line above them."""

    summary: str
    blocks: list[Text | Image | Table] = field(default_factory=list)


Block = Text | Image | Table | Details
"""Anything a section holds."""


@dataclass
class Section:
    """A titled part of the report. A section without blocks has no data: the report
    leaves it out."""

    title: str
    blocks: list[Block] = field(default_factory=list)

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
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; } td.short { white-space: nowrap; }
.caption { font-weight: 600; margin-bottom: .2rem; } code { background: #f3f3f3; padding: 0 .2rem; }
nav ul { columns: 2; } .status-failed { color: #b00; font-weight: 600; }
details { margin: .5rem 0 1rem; } summary { cursor: pointer; font-weight: 600; }
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


CODE = re.compile(r"`([^`]+)`")
"""A ``code`` span of a text, the same in both formats."""


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return CODE.sub(r"<code>\1</code>", out)


def _cell(value: object) -> str:
    """A table cell's text: a number that reached the table unformatted still reads
    :func:`.fmt.cell` (never ``2048.0`` nor 17 digits), a missing value ``—``."""
    return fmt.cell(value)


NUMERIC = re.compile(r"[-+]?(\d[\d.]*(e[-+]?\d+)?|∞)( ?(×|[µnm]?s|[KMGT]?i?B))?|—")
"""A cell holding one number (with its unit, if any), right-aligned."""

SHORT = 24
"""Cells up to this many characters do not wrap."""


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.frame.columns)
    body = []
    for row in table.frame.itertuples(index=False):
        cells = []
        for v in row:
            text = _cell(v)
            classes = [
                *(["status-failed"] if text.startswith("failed") else []),
                *(["num"] if NUMERIC.fullmatch(text) else []),
                *(["short"] if len(text) <= SHORT else []),
            ]
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<div class="caption">{_inline_html(table.caption)}</div>' if table.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _blocks_html(blocks: list[Block], out: Path) -> list[str]:
    parts = []
    for block in blocks:
        if isinstance(block, Text):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_table_html(block))
        elif isinstance(block, Details):
            parts.append(f"<details><summary>{_inline_html(block.summary)}</summary>")
            parts += _blocks_html(block.blocks, out)
            parts.append("</details>")
        else:
            data = base64.b64encode((out / block.path).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(block.path)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>"
            )
    return parts


def write_html(sections: list[Section], out: Path, title: str, subtitle: str, path: Path) -> Path:
    """Write the page to ``path``, embedding every :class:`Image` (read from ``out/<path>``).

    The first section (the answer) comes right after the title, so that it fills the first
    screen; the list of the other sections follows it."""
    nav = (
        "<nav><ul>"
        + "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections[1:])
        + "</ul></nav>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{_inline_html(subtitle)}</p>",
    ]
    for i, section in enumerate(sections):
        if i == 1:
            parts.append(nav)
        parts.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        parts += _blocks_html(section.blocks, out)
        parts.append("</section>")
    parts.append(CHECK_SCRIPT + "</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


_MD_MARKUP = re.compile(r"([\\`\[\]<>&])")


def _inline_md(text: str) -> str:
    """``text`` as Markdown on one line that shows what :func:`_inline_html` shows: its
    ``code`` spans stay code (where nothing is markup), ``**`` stays bold, and elsewhere
    the characters that make HTML, links, images or code (``\\ ` [ ] < > &``) are escaped."""
    parts = CODE.split(re.sub(r"[\r\n]+", " ", text))  # plain, code, plain, code, ..., plain
    return "".join(f"`{part}`" if i % 2 else _MD_MARKUP.sub(r"\\\1", part) for i, part in enumerate(parts))


def _cell_md(value: object) -> str:
    """A table cell: :func:`_inline_md`, and a ``|`` escaped (even in code, as GFM tables need)."""
    return _inline_md(_cell(value)).replace("|", "\\|")


def _table_md(table: Table) -> str:
    head = "| " + " | ".join(map(_cell_md, table.frame.columns)) + " |"
    lines = [head, "|" + "---|" * table.frame.shape[1]]
    for row in table.frame.itertuples(index=False):
        lines.append("| " + " | ".join(map(_cell_md, row)) + " |")
    caption = f"**{_inline_md(table.caption)}**\n\n" if table.caption else ""
    return caption + "\n".join(lines)


def _blocks_md(blocks: list[Block]) -> list[str]:
    parts = []
    for block in blocks:
        if isinstance(block, Text):
            parts.append(_inline_md(block.text))
        elif isinstance(block, Table):
            parts.append(_table_md(block))
        elif isinstance(block, Details):
            parts.append(f"**{_inline_md(block.summary)}**")
            parts += _blocks_md(block.blocks)
        else:
            caption = _inline_md(block.caption)
            parts.append(f"![{caption}]({block.path})\n\n*{caption}*")
    return parts


def write_markdown(sections: list[Section], title: str, subtitle: str, path: Path) -> Path:
    """Write the summary to ``path``; figures are linked as the PNG files beside it."""
    parts = [f"# {_inline_md(title)}", _inline_md(subtitle)]
    for section in sections:
        parts.append(f"## {_inline_md(section.title)}")
        parts += _blocks_md(section.blocks)
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell starting with one of these as a formula."""


def _csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula gets a leading ``'`` (OWASP's
    CSV injection advice); every other value is unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` as CSV, its text cells made safe for spreadsheets (:func:`_csv_cell`)."""
    text = frame.select_dtypes(include=["object", "string"]).columns
    frame.assign(**{c: frame[c].map(_csv_cell) for c in text}).to_csv(path, index=False)
    return path
