"""The English–Chinese glossary (notebooks/glossary.md) and its link from every chapter header.

The glossary's tables have four columns: English term | 中文 | meaning in the course | chapter. Each row
names a chapter that exists, under that chapter's section; no English term is listed twice; every Chinese
entry holds Chinese characters or says "(usually left in English)". Every chapter's header ends its
Prerequisites section with a link to the glossary. A section names the terms Chinese articles confuse.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
GLOSSARY = NOTEBOOKS / "glossary.md"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CHAPTER_NUMBERS = {p.name[:2] for p in CHAPTERS}
HEADER = ("English term", "中文", "Meaning in this course", "Ch.")
LEFT_IN_ENGLISH = "(usually left in English)"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CONFUSIONS = "## Terms often confused in Chinese articles"
LINK = re.compile(r"\]\((glossary\.md)\)")


def split_row(line):
    """The cells of one Markdown table row, stripped: ``| a | b |`` → ``["a", "b"]``."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def glossary_rows(text):
    """(line number, section heading, cells) of every body row of every glossary table in ``text``.

    A glossary table is a run of lines starting with ``|`` whose first row is ``HEADER``; its second row
    is the ``|---|`` separator. A table with another header raises, so a misspelt header cannot hide rows.
    """
    rows, section, table = [], None, None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            section = line
        if not line.startswith("|"):
            table = None
            continue
        if table is None:
            table = split_row(line)
            assert tuple(table) == HEADER, f"line {number}: a table's header must be {' | '.join(HEADER)}, not {line!r}"
            continue
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            continue
        rows.append((number, section, split_row(line)))
    return rows


def row_problems(rows):
    """What is wrong with the rows, one message each (an empty list: nothing)."""
    problems, seen = [], {}
    for number, section, cells in rows:
        if len(cells) != len(HEADER):
            problems.append(f"line {number}: {len(cells)} columns, not {len(HEADER)} (a '|' inside a cell?)")
            continue
        english, chinese, meaning, chapter = cells
        if not english or not chapter or not meaning:
            problems.append(f"line {number}: an empty English, meaning or chapter cell")
        if not (CJK.search(chinese) or LEFT_IN_ENGLISH in chinese):
            problems.append(f"line {number}: the Chinese entry {chinese!r} has no Chinese characters "
                            f"and does not say {LEFT_IN_ENGLISH}")
        if chapter not in CHAPTER_NUMBERS:
            problems.append(f"line {number}: chapter {chapter!r} is not a notebook in notebooks/ "
                            f"(have {sorted(CHAPTER_NUMBERS)})")
        elif not (section or "").startswith(f"## Chapter {chapter} "):
            problems.append(f"line {number}: a chapter {chapter} term listed under {section!r}")
        for term in (t.strip().lower() for t in english.split(" / ")):
            if term in seen:
                problems.append(f"line {number}: {term!r} is already listed on line {seen[term]}")
            seen.setdefault(term, number)
    return problems


@pytest.fixture(scope="module")
def text():
    assert GLOSSARY.is_file(), f"{GLOSSARY.relative_to(ROOT)} is missing"
    return GLOSSARY.read_text(encoding="utf-8")


def test_checks_catch_a_broken_table():
    good = "| loss | 损失 | The number training makes small. | 01 |"
    head = "## Chapter 01 · Losses\n\n| " + " | ".join(HEADER) + " |\n|---|---|---|---|\n"
    assert row_problems(glossary_rows(head + good)) == []
    broken = [
        "| loss | 损失 | 01 |",  # a column missing
        "| | 损失 | The number training makes small. | 01 |",  # no English term
        "| loss | loss | The number training makes small. | 01 |",  # no Chinese, no marker
        "| loss | 损失 | The number training makes small. | 99 |",  # no chapter 99
        "| loss | 损失 | The number training makes small. | 02 |",  # under chapter 01's heading
        good + "\n| Loss / cost | 损失 / 代价 | Twice. | 01 |",  # "loss" twice
    ]
    for row in broken:
        assert row_problems(glossary_rows(head + row)), row
    with pytest.raises(AssertionError, match="header"):
        glossary_rows("| English | Chinese | Meaning | Chapter |\n|---|---|---|---|\n| a | 甲 | b | 01 |")


def test_tables_parse(text):
    rows = glossary_rows(text)
    assert len(rows) >= 100, f"only {len(rows)} terms: the glossary should cover the course (about 120–200)"
    problems = row_problems(rows)
    assert not problems, "\n".join(problems)


def test_every_chapter_has_terms(text):
    chapters = {cells[3] for _, _, cells in glossary_rows(text) if len(cells) == len(HEADER)}
    assert chapters == CHAPTER_NUMBERS, f"no terms for chapters {sorted(CHAPTER_NUMBERS - chapters)}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_header_links_the_glossary(path):
    header = nbformat.read(path, as_version=4).cells[0].source
    sections = re.split(r"^(?=#+ )", header, flags=re.M)
    prerequisites = next((s for s in sections if re.match(r"#+ Prerequisites", s)), None)
    assert prerequisites is not None, f"{path.name}: the header has no Prerequisites section"
    links = LINK.findall(prerequisites)
    assert links, (f"{path.name}: end the header's Prerequisites with "
                   f"'Terms in English and Chinese (中英术语对照): [glossary](glossary.md).'")
    assert all((path.parent / target).is_file() for target in links), f"{path.name}: the link's target is missing"


def test_confusions_section(text):
    assert CONFUSIONS in text, f"the glossary lacks the section {CONFUSIONS!r}"
    section = text.split(CONFUSIONS, 1)[1].split("\n## ", 1)[0]
    for word in ("准确率", "精确率", "召回率", "模型并行", "张量并行", "流水线并行", "归一化", "标准化",
                 "超参数", "迭代", "目标函数"):
        assert word in section, f"the confusions section does not name {word}"
