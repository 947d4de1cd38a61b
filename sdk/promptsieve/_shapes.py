"""Unfenced code, config and tables, found by the shape of their lines.

Prompts paste code and data without fences: a Python line, a SQL query, a traceback, YAML,
CSV, a markdown table, a JS object literal, JSON with trailing commas. Each is protected
whole (byte-identical), because pruning a word out of it changes its meaning.

One left-to-right walk over the lines; each line is classified by cheap shape tests, and the
expensive confirmations run only on candidates: Python lines must parse with the standard
library's :mod:`ast` (prose like "Thanks." or "return the book" does not), CSV rows are split by
the standard :mod:`csv` reader, and bracketed literals must load with :mod:`json` once trailing
commas are removed, or have ``key:`` pairs. pygments' ``guess_lexer`` was tried and does not fit:
it guesses a language for any text, prose included, and costs milliseconds per call.

Tables keep their whole structure: every line of a table block (rows, pipes, separator row)
is one protected region.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import warnings

__all__ = ["bracket_spans", "line_spans"]

Range = tuple[int, int]

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")

# -- tables
_TABLE_SEP = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$")
_TABLE_SEP_CELLS = re.compile(r"\|[ \t]*:?-{3,}:?[ \t]*\|")

# -- code
_PY_CANDIDATE = re.compile(r"[()\[\]{}=:]")
_PY_BLOCK_KW = re.compile(r"^(?:elif|else|except|finally|case)\b")
_PY_STMT_KW = re.compile(
    r"^(?:def|class|return|import|from|if|elif|else|for|while|with|try|except|finally|raise"
    r"|yield|assert|lambda|async|await|del|global|nonlocal|pass|break|continue|match|case"
    r"|print)\b"
)
_SQL = re.compile(
    r"^(?:SELECT\s+(?:DISTINCT\s+)?[\w*\"`(]|(?:AND|OR)\s+\S+\s*(?:=|<|>|IN\b|IS\b|LIKE\b)|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|CREATE\s+(?:TABLE|INDEX|VIEW|UNIQUE|DATABASE|SCHEMA)|ALTER\s+TABLE|DROP\s+(?:TABLE|INDEX|VIEW)"
    r"|WITH\s+\w+\s+AS\s*\(|FROM\s+[\w.\"`]+|WHERE\s+\S+\s*(?:=|<|>|IN\b|IS\b|LIKE\b)"
    r"|(?:LEFT|RIGHT|INNER|OUTER|FULL|CROSS)?\s*JOIN\s+\S+\s+(?:ON|USING)\b|GROUP\s+BY|ORDER\s+BY"
    r"|HAVING\s|LIMIT\s+\d|VALUES\s*\(|UNION(?:\s+ALL)?$"
    r"|select\s.+\sfrom\s+[\w.\"`]+|insert\s+into\s|update\s+\w+\s+set\s|delete\s+from\s)"
)
_TRACE = re.compile(
    r"^(?:Traceback \(most recent call last\):|File \"[^\"\n]+\", line \d+"
    r"|(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Warning|Interrupt|Exit)(?::.*)?$"
    r"|at [\w.$<>]+\([^()\n]*\)$|Caused by: [\w.$]+|\^+$|~*\^+~*$|During handling of the above)"
)
_SHELL = re.compile(r"^(?:\$ [a-z./]|>>> \S|In \[\d+\]: \S|PS [A-Z]:\\[^>]*> \S)")
_C_LIKE = re.compile(
    r"(?:[;{]|\}[;,)]?|\);|\)\s*\{|=>\s*\{?|\][;,])$"
    r"|^(?:\}|\]|\)|//|/\*|\*/|#include\b|#define\b|#!/)"
    r"|^@[\w.]+(?:\(.*\))?$"
    r"|^(?:const|let|var|function|public|private|protected|static|fn|func|using|import"
    r"|export|interface|type|struct|enum|impl|namespace|template)\s+[\w.$]+\s*[=({<:]"
)
_MAX_CODE_LINE = 400  # longer lines are parsed as Python only inside a code-like run
_CODE_PUNCT = re.compile(r"[(){}\[\]=;<>]|->|::|&&|\|\|")
# -- config
_YAML_KEY = re.compile(r"^[ \t]*(?:- +)?([\"']?[A-Za-z_$][\w.$/-]*[\"']?)[ \t]*:(?:[ \t]+(.*))?$")
_YAML_ITEM = re.compile(r"^[ \t]*- +\S")
_INI = re.compile(r"^[ \t]*(?:\[[\w .:\"/-]+\]|[A-Za-z_][\w.-]*[ \t]*=[ \t]*\S.*)$")
_CSV_DELIMS = (",", "\t", ";", "|")


def line_spans(text: str) -> list[Range]:
    """Protected ranges for tables, code lines and config lines (each line's content)."""
    lines: list[tuple[int, int, str]] = []  # (start, end without line break, content)
    for m in _LINE.finditer(text):
        if m.end() == m.start():
            break
        content = m.group().rstrip("\r\n")
        lines.append((m.start(), m.start() + len(content), content))
    kinds = [_kind(c) for _, _, c in lines]
    _tables(lines, kinds)
    _csv_blocks(lines, kinds)
    _config_blocks(lines, kinds)
    _indented_bodies(lines, kinds)
    spans: list[Range] = []
    for (start, end, content), kind in zip(lines, kinds, strict=True):
        if kind:
            lead = len(content) - len(content.lstrip())
            spans.append((start + lead, end))
    return spans


def _kind(line: str) -> str:
    s = line.strip()
    if s in ("{", "}", "[", "]", "(", ")", "};", "});", "],", "},"):
        return "code"
    if len(s) < 2:
        return ""
    if _TRACE.match(s) or _SQL.match(s) or _SHELL.match(s):
        return "code"
    if _C_LIKE.search(s) and _CODE_PUNCT.search(s[:-1]) and not _prose_end(s):
        return "code"
    if len(s) <= _MAX_CODE_LINE and _PY_CANDIDATE.search(s) and _python_line(s):
        return "code"
    return ""


def _prose_end(s: str) -> bool:
    """Ends like a sentence and has many plain words: prose that happens to hold a bracket."""
    words = s.split()
    plain = sum(1 for w in words if w.isalpha())
    return len(words) >= 6 and plain >= 0.7 * len(words)


def _python_line(s: str) -> bool:
    """A line that parses as a meaningful Python statement (not a bare name or label)."""
    src = s
    if _PY_BLOCK_KW.match(s):
        kw = s.split(None, 1)[0].rstrip(":")
        head = "try:\n pass\n" if kw in ("except", "finally") else "if x:\n pass\n"
        if kw == "case":
            head = "match x:\n "
        src = head + s
    if src.rstrip().endswith(":"):
        src += "\n pass"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    if not tree.body:
        return False
    node = tree.body[-1] if _PY_BLOCK_KW.match(s) else tree.body[0]
    if isinstance(node, ast.AnnAssign):
        return node.value is not None  # "Answer: (A)" parses as an annotation
    if isinstance(node, ast.Expr):
        v = node.value
        if isinstance(v, (ast.Name, ast.Constant, ast.Tuple)):
            return False  # "(see above)", "Thanks", "1, 2"
        if isinstance(v, ast.Call):
            return bool(v.args or v.keywords) or isinstance(v.func, ast.Attribute)
        if isinstance(v, (ast.Compare, ast.BinOp, ast.UnaryOp, ast.BoolOp)):
            return bool(_PY_STMT_KW.match(s)) or "==" in s or "." in s
        return True
    return True


def _tables(lines: list[tuple[int, int, str]], kinds: list[str]) -> None:
    """Markdown/pipe tables: a run of >= 2 lines with pipes that holds a separator row, or
    whose lines all start and end with a pipe."""
    i = 0
    n = len(lines)
    while i < n:
        if lines[i][2].count("|") < 1 or not lines[i][2].strip():
            i += 1
            continue
        j = i
        while j < n and lines[j][2].count("|") >= 1 and lines[j][2].strip():
            j += 1
        block = [lines[k][2].strip() for k in range(i, j)]
        has_sep = any(_TABLE_SEP.match(b) and "-" in b for b in block)
        has_sep = has_sep or any(_TABLE_SEP_CELLS.search(b) for b in block)
        framed = all(b.startswith("|") and b.endswith("|") and b.count("|") >= 2 for b in block)
        if j - i >= 2 and (has_sep or framed):
            for k in range(i, j):
                kinds[k] = "table"
        i = j


def _csv_blocks(lines: list[tuple[int, int, str]], kinds: list[str]) -> None:
    """>= 2 consecutive lines with the same delimiter count and short cells (csv reader)."""
    n = len(lines)
    i = 0
    while i < n:
        best: tuple[int, int] = (0, 0)
        for delim in _CSV_DELIMS[:3]:
            cells = _csv_cells(lines[i][2], delim)
            if cells < (2 if delim == "\t" else 3):
                continue
            j = i + 1
            while j < n and _csv_cells(lines[j][2], delim) == cells:
                j += 1
            if j - i >= 2 and j - i > best[1] - best[0]:
                best = (i, j)
        if best[1] > best[0]:
            for k in range(*best):
                kinds[k] = kinds[k] or "csv"
            i = best[1]
        else:
            i += 1


def _csv_cells(line: str, delim: str) -> int:
    """Number of cells when the line reads as a CSV row of short cells, else 0."""
    if delim not in line or len(line) > 2000:
        return 0
    try:
        row = next(csv.reader([line], delimiter=delim))
    except (csv.Error, StopIteration):
        return 0
    cells = [c.strip() for c in row]
    if len(cells) < 2 or max(len(c) for c in cells) > 60:
        return 0
    if sum(len(c) for c in cells) / len(cells) > 24:
        return 0
    if any(c.count("(") != c.count(")") or c.count("[") != c.count("]") for c in cells):
        return 0  # a bracket spans cells: an enumeration inside a sentence
    wordy = sum(1 for c in cells if len(c.split()) > 2)
    if wordy * 3 > len(cells) or (wordy and line.rstrip()[-1:] in ".!?"):
        return 0  # clauses of a sentence, not cells
    return len(cells)


def _config_blocks(lines: list[tuple[int, int, str]], kinds: list[str]) -> None:
    """YAML (key: value, nested or listed) and INI/.env runs of >= 2 lines."""
    n = len(lines)
    i = 0
    while i < n:
        j = i
        lower = nested = 0
        while j < n:
            c = lines[j][2]
            m = _YAML_KEY.match(c)
            if m:
                value = (m.group(2) or "").strip()
                if len(value) > 80 or (len(value.split()) > 6 and value[-1:] in ".?!"):
                    break
                key = m.group(1).strip("\"'")
                lower += key[:1].islower() or "_" in key or "." in key
                nested += not value
            elif _YAML_ITEM.match(c) and j > i and len(c) <= 120:
                pass
            elif _INI.match(c):
                lower += 1
            else:
                break
            j += 1
        if j - i >= 2 and (lower >= 1 and (lower >= (j - i) // 2 or nested)):
            for k in range(i, j):
                kinds[k] = kinds[k] or "config"
            i = j
        else:
            i = max(j, i + 1)


def _indented_bodies(lines: list[tuple[int, int, str]], kinds: list[str]) -> None:
    """Lines indented deeper than a code/config line above them belong to its block; so do
    comment lines between two code lines. One pass with a stack of open blocks."""
    n = len(lines)
    open_blocks: list[tuple[int, str]] = []  # (indent, kind) of enclosing code/config lines
    for i in range(n):
        content = lines[i][2]
        if not content.strip():
            continue
        indent = _indent(content)
        while open_blocks and indent <= open_blocks[-1][0]:
            open_blocks.pop()
        if not kinds[i] and open_blocks:
            kinds[i] = open_blocks[-1][1]
        if kinds[i] in ("code", "config"):
            open_blocks.append((indent, kinds[i]))
    for i in range(1, n - 1):
        comment = lines[i][2].lstrip().startswith(("#", "//", "--"))
        if comment and not kinds[i] and kinds[i - 1] == kinds[i + 1] == "code":
            kinds[i] = "code"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


# ---------------------------------------------------------------------------- bracketed literals

_OBJ_KEY = re.compile(
    r"""[{,][ \t\r\n]*(?:"[^"\n]{1,100}"|'[^'\n]{1,100}'|[A-Za-z_$][\w$-]{0,60})[ \t]*:"""
)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def bracket_spans(text: str, pairs: dict[int, int], covered: int = 0) -> list[Range]:
    """Bracketed literals that are not strict JSON: JSON with trailing commas (loads once
    they are removed) and JS/Python object literals (``{a: 1, 'b': 2}``)."""
    spans: list[Range] = []
    for p in sorted(pairs):
        if p < covered:
            continue
        q = pairs[p] + 1
        body = text[p:q]
        ok = False
        if body[0] == "{" and _OBJ_KEY.search(body):
            ok = True
        elif "," in body:
            try:
                json.loads(_TRAILING_COMMA.sub(r"\1", body))
                ok = True
            except (ValueError, RecursionError):
                ok = False
        if ok and q > p + 2:
            spans.append((p, q))
            covered = q
    return spans
