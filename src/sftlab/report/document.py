"""The report as a document: sections of small blocks, rendered to Markdown and to self-contained HTML.

The document is built once as a list of sections made of blocks (paragraphs, bullets, tables,
code, images, a token rendering) and rendered twice: Markdown next to PNG files, and HTML with the
PNGs inlined as ``data:`` URIs so the one file can be mailed or archived. Inline text uses two
marks only, ``**bold**`` and `` `code` ``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

from sftlab.report.results import markdown_table

SECTION_TITLES = (
    "1. Environment",
    "2. Method and checks",
    "3. Training configuration",
    "4. Data",
    "5. Loss curves",
    "6. Baseline vs fine-tuned",
    "7. Per-instruction results",
    "8. Example outputs",
    "9. Hyperparameters and analysis",
)
TRIM_CHARS = 700


# --------------------------------------------------------------------------------------------
# Document model
# --------------------------------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # p | bullets | table | code | image | tokens
    text: str = ""
    items: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    image: str = ""  # file name of a PNG next to the report
    segments: list[tuple[str, bool, bool]] = field(default_factory=list)  # (text, trained, special)


def P(text: str) -> Block:
    return Block("p", text=text)


def Bullets(items: list[str]) -> Block:
    return Block("bullets", items=items)


def Table(headers: list[str], rows: list[list[Any]]) -> Block:
    return Block("table", headers=headers, rows=[[str(c) for c in r] for r in rows])


def Code(text: str) -> Block:
    return Block("code", text=text)


def Image(name: str, caption: str) -> Block:
    return Block("image", image=name, text=caption)


@dataclass
class Section:
    title: str
    blocks: list[Block]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def render_markdown(title: str, intro: list[Block], sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for sec in [Section("", intro)] + sections:
        if sec.title:
            out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "p":
                out += [b.text, ""]
            elif b.kind == "bullets":
                out += [f"- {it}" for it in b.items] + [""]
            elif b.kind == "table":
                out += [markdown_table(b.headers, b.rows)]
            elif b.kind == "code":
                fence = "````" if "```" in b.text else "```"
                out += [fence + "text", b.text.rstrip("\n"), fence, ""]
            elif b.kind == "image":
                out += [f"![{b.text.replace('`', '')}]({b.image})", "", f"*{b.text}*", ""]
            elif b.kind == "tokens":
                merged: list[list] = []
                for t, trained, _ in b.segments:  # one ⟦...⟧ per trained run, special tokens or not
                    if merged and merged[-1][1] == trained:
                        merged[-1][0] += t
                    else:
                        merged.append([t, trained])
                text = "".join(f"⟦{t}⟧" if trained else t for t, trained in merged)
                fence = "````" if "```" in text else "```"
                out += [fence + "text", text.rstrip("\n"), fence, ""]
    return "\n".join(out).rstrip() + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    """Escape, then turn the two inline marks the report uses (``**bold**``, `` `code` ``) into tags."""
    parts = _CODE.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a1a1a;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .55em;
text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.7em;overflow-x:auto;white-space:pre-wrap;word-break:break-word}
code{background:#f0f0f0;padding:0 .2em}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}
.conv .tr{background:#c8f7c5}.conv .sp{color:#0645ad;font-weight:bold}.legend span{padding:0 .3em}
"""


def render_html(title: str, intro: list[Block], sections: list[Section], images: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for sec in [Section("", intro)] + sections:
        if sec.title:
            anchor = re.sub(r"[^a-z0-9]+", "-", sec.title.lower()).strip("-")
            out.append(f'<section id="{anchor}"><h2>{html.escape(sec.title)}</h2>')
        for b in sec.blocks:
            if b.kind == "p":
                out.append(f"<p>{_inline_html(b.text)}</p>")
            elif b.kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline_html(it)}</li>" for it in b.items) + "</ul>")
            elif b.kind == "table":
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
                body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "code":
                out.append(f"<pre>{html.escape(b.text)}</pre>")
            elif b.kind == "image":
                data = base64.b64encode(images[b.image]).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.text.replace("`", ""))}">'
                           f"<figcaption>{_inline_html(b.text)}</figcaption></figure>")
            elif b.kind == "tokens":
                spans = []
                for t, trained, special in b.segments:
                    cls = " ".join(c for c, on in (("tr", trained), ("sp", special)) if on)
                    spans.append(f'<span class="{cls}">{html.escape(t)}</span>' if cls else html.escape(t))
                out.append('<p class="legend"><span class="tr">trained token (label = token id)</span> '
                           '<span class="sp">special token</span> unmarked: label -100</p>')
                out.append(f'<pre class="conv">{"".join(spans)}</pre>')
        if sec.title:
            out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------


def signed(v: float | None, digits: int = 1) -> str:
    """A difference of fractions in signed percentage points (``0.05`` -> ``"+5.0"``)."""
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:+.{digits}f}"


def plus_minus(se: float | None) -> str:
    """A standard error (a fraction) as ``±x.x`` points, ``n/a`` when undefined (fewer than two units)."""
    return "n/a" if se is None or math.isnan(se) else f"±{100 * se:.1f}"


def trim(text: str, n: int = TRIM_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n].rstrip() + f" … [trimmed; {len(text)} characters in all]"


def fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"
