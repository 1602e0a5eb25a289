"""Find measured-looking figures in a notebook's Markdown.

A lecture states a measured figure (an accuracy, a loss, a time, a speed-up) in its prose only
when a cell of the same run computed it and rendered it (such output is not Markdown source and
is never flagged). Any other figure in a Markdown cell must be listed, with what it is, in the
notebook's metadata ``dlwb.prose_numbers``: ``{"1.8857": "source: nanoGPT README, ..."}``. A label
starts with its kind:

- ``source:`` a figure from elsewhere (a paper, a reference implementation), named there and here;
- ``setting:`` a value the chapter chooses (a split share, a hyperparameter quoted in the text);
- ``arithmetic:`` a worked example the text computes by hand (``-ln 0.3 = 1.204``);
- ``fact:`` a property of the data or the format (``28×28``-style constants that look measured).

Text inside LaTeX math (``$…$``, ``$$…$$``) and code (backticks) is formulas and code, not prose.
"""

from __future__ import annotations

import re

KINDS = ("source:", "setting:", "arithmetic:", "fact:")

NUMBER = r"\d+(?:[.,]\d+)*"
MEASURED = re.compile(
    rf"(?<![\w.]){NUMBER}\s*%"  # 97.5%, 12 %
    rf"|(?<![\w.]){NUMBER}\s*(?:×|x)(?![\w\d])(?!\s*\d)"  # 1.66×, 3x (a ratio), not 28×28
    rf"|(?<![\w.]){NUMBER}\s*(?:s|ms|µs|us|min|h|sec|secs|seconds|minutes|hours)\b"  # 162 s, 3 minutes
    rf"|(?<![\w.\d])\d+\.\d{{2,}}(?![\d])"  # 1.893, 0.1204: two or more decimals
)
MACHINE_REMARKS = re.compile(
    r"shared cores|on (?:this|our|my) (?:machine|laptop|computer|CPU)|\b(?:two|2)[- ]core|"
    r"\bour (?:machine|laptop|server)\b|under load|busy machine",
    re.IGNORECASE,
)


def prose(markdown: str) -> str:
    """The Markdown with math, code spans, code blocks, HTML comments and link targets blanked out."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"(?<!\\)\$.+?(?<!\\)\$", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets (URLs hold digits)
    return text


def measured_figures(markdown: str) -> list[str]:
    """The measured-looking figures of one Markdown cell, as written (whitespace normalised)."""
    return [re.sub(r"\s+", " ", m.group(0).strip()) for m in MEASURED.finditer(prose(markdown))]


def machine_remarks(markdown: str) -> list[str]:
    return [m.group(0) for m in MACHINE_REMARKS.finditer(prose(markdown))]


def listing_keys(figure: str) -> tuple[str, ...]:
    """The keys under which ``dlwb.prose_numbers`` may list a figure: as written, without spaces, or its number.

    ``"97.5 %"`` may be listed as ``"97.5 %"``, ``"97.5%"`` or ``"97.5"``.
    """
    return tuple(dict.fromkeys((figure, figure.replace(" ", ""), re.match(NUMBER, figure).group(0))))
