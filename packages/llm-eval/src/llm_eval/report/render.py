"""A report's blocks to Markdown, and that Markdown to one self-contained HTML page.

A report is a list of blocks: ("h1"|"h2"|"h3"|"p", text), ("ul", [items]), ("table", headers, rows),
("img", file name, alt text), ("contents",): one line linking the report's h2 headings. They are written
once, as Markdown (what GitHub shows); the HTML page is that Markdown rendered by markdown-it-py, with each
heading given the id GitHub gives it (so the contents links work in both) and each figure embedded as a
data URI, so the page is one file.
"""

from __future__ import annotations

import base64
import os
import re
from html import escape as html_escape
from pathlib import Path

PAGE_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:64rem;margin:1.5rem auto;padding:0 1rem;line-height:1.45}"
    "h1{font-size:1.6rem;margin:.4rem 0}h2{margin:1.2rem 0 .4rem}"
    "table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}"
    "img{max-width:100%}ul{margin:.3rem 0}"
)


def anchor(title: str) -> str:
    """The heading's id as GitHub renders Markdown: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def escape(text: str) -> str:
    """Escape what Markdown would read as an HTML tag (`<name>`), emphasis (`*`, or `_` not inside a word) or a
    table border; code spans (between backticks) keep their text, since a backslash there is literal."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        part = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", parts[i]).replace("*", "\\*")
        parts[i] = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", part)
    return "".join(parts).replace("|", "\\|")


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(blocks: list[tuple], image_dir: str) -> str:
    headings = [block[1] for block in blocks if block[0] == "h2"]
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {block[1]}")
        elif kind == "contents":
            out.append("Contents: " + " · ".join(f"[{escape(t)}](#{anchor(t)})" for t in headings))
        elif kind == "p":
            out.append(escape(block[1]))
        elif kind == "ul":
            out.append("\n".join(f"- {escape(item)}" for item in block[1]))
        elif kind == "table":
            out.append(table(block[1], block[2]))
        elif kind == "img":
            out.append(f"![{block[2]}]({image_dir}/{block[1]})")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    return "\n\n".join(out) + "\n"


def to_html(markdown: str, images: dict[str, bytes], title: str) -> str:
    """The Markdown as an HTML page: `images` (file name -> PNG bytes) replace the figures' relative links."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def heading_ids(state) -> None:
        for i, token in enumerate(state.tokens):
            if token.type == "heading_open":
                token.attrSet("id", anchor(state.tokens[i + 1].content))

    default_image = md.renderer.rules["image"]

    def embedded(renderer, tokens, idx, options, env) -> str:
        name = str(tokens[idx].attrGet("src") or "").rsplit("/", 1)[-1]
        if name in images:
            tokens[idx].attrSet("src", "data:image/png;base64," + base64.b64encode(images[name]).decode("ascii"))
        return default_image(tokens, idx, options, env)

    md.core.ruler.push("heading_ids", heading_ids)
    md.add_render_rule("image", embedded)
    body = md.render(markdown)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html_escape(title)}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["anchor", "escape", "table", "to_html", "to_markdown", "write_text"]
