"""One home for the text helpers of reports: strict-JSON values, Markdown tables and
escaped Markdown text, CSV cells safe from formula injection, natural sort, and the last
value of a training history.

Pure Python + NumPy (no TensorFlow, no scikit-learn), so any module can import it.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

_DIGITS = re.compile(r"(\d+)")


def jsonable(value):
    """``value`` with NumPy values, tuples and odd keys turned into strict-JSON values.

    Parameters
    ----------
    value : object
        Any nesting of mappings, lists, tuples, NumPy arrays and scalars.

    Returns
    -------
    object
        Mappings become dicts with ``str`` keys; lists, tuples and arrays become lists;
        NumPy scalars become Python scalars; non-finite floats become ``None``; objects
        JSON cannot hold become their ``repr``.

    Examples
    --------
    >>> jsonable({"a": np.float32(0.5), 1: (np.int64(2), float("nan"))})
    {'a': 0.5, '1': [2, None]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return str(value) if isinstance(value, np.str_) else value
    return repr(value)


#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def markdown_text(value) -> str:
    """``value`` as inline Markdown text: HTML escaped, on one line, ``|`` escaped.

    Parameters
    ----------
    value : object
        Shown with ``str``; class names and file names come from users' folders.

    Returns
    -------
    str

    Examples
    --------
    >>> markdown_text("<img src=x onerror=alert(1)>|a")
    '&lt;img src=x onerror=alert(1)&gt;\\\\|a'
    """
    # A "|" inside a table cell would start a new column; a newline would end the row.
    text = html.escape(str(value), quote=False)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cell(value) -> str:
    return markdown_text(value)


def csv_cell(value):
    """``value`` safe to open in a spreadsheet: text starting a formula gets a ``'``.

    Parameters
    ----------
    value : object
        A cell. Only strings (including NumPy strings) are changed, so numbers such as
        ``-0.5`` stay numbers.

    Returns
    -------
    object
        ``"'" + value`` for strings starting with ``=``, ``+``, ``-``, ``@``, tab or
        carriage return (:data:`FORMULA_PREFIXES`), else ``value`` unchanged.

    Examples
    --------
    >>> csv_cell("=1+1"), csv_cell("cat"), csv_cell(-2)
    ("'=1+1", 'cat', -2)
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_column(values):
    """A column of cells passed through :func:`csv_cell` (numeric columns unchanged).

    Parameters
    ----------
    values : array-like, 1-D

    Returns
    -------
    numpy.ndarray
        ``values`` itself as an array if numeric or boolean, else an object array.
    """
    array = np.asarray(values)
    if array.dtype.kind in "biufc":
        return array
    return np.array([csv_cell(str(v) if isinstance(v, np.str_) else v) for v in array],
                    dtype=object)


def markdown_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table, followed by an empty line.

    Parameters
    ----------
    header : sequence
        Column titles (shown with ``str``).
    rows : sequence of sequences
        One sequence of cells per row, each as long as ``header``.

    Returns
    -------
    str
        The table's lines joined by newlines, ending with ``"\\n"``.

    Examples
    --------
    >>> print(markdown_table(["a", "b"], [[1, "x|y"]]), end="")
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"rows[{i}] must have {len(header)} cells like header, "
                             f"got {len(row)}")
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def natural_key(value) -> tuple:
    """Sort key that orders digit runs by number: ``s2`` before ``s10``.

    Parameters
    ----------
    value : object
        Shown with ``str``; numbers sort numerically, the rest case-insensitively.

    Returns
    -------
    tuple
        Alternating text and number parts, comparable between any two values.

    Examples
    --------
    >>> sorted(["s10", "s2", "s", "s1"], key=natural_key)
    ['s', 's1', 's2', 's10']
    """
    parts = _DIGITS.split(str(value))
    # (kind, number, text) triples keep str and int parts apart so any two names compare;
    # the end marker sorts a prefix first ("s" < "s1") and its raw string breaks ties
    # deterministically ("A" vs "a", "01" vs "1").
    key = tuple((1, int(p), "") if i % 2 else (0, 0, p.casefold())
                for i, p in enumerate(parts))
    return (*key, (-1, 0, str(value)))


def last_value(history, key: str) -> float | None:
    """The last recorded value of ``key`` in a Keras-style history, or ``None``.

    Parameters
    ----------
    history : mapping
        Name -> per-epoch list (``None`` entries stand for NaN after a JSON round trip).
    key : str
        The metric, e.g. ``"loss"``.

    Returns
    -------
    float or None
        ``None`` when the key is missing, empty, or its last value is ``None`` or NaN.

    Examples
    --------
    >>> last_value({"loss": [0.5, 0.25]}, "loss"), last_value({}, "loss")
    (0.25, None)
    """
    values = (history or {}).get(key)
    if values is None or len(values) == 0 or values[-1] is None:
        return None
    value = float(values[-1])
    return value if math.isfinite(value) else None
