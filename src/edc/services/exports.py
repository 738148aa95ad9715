"""CSV that is safe to open in a spreadsheet.

Participants name their files and themselves; a cell that begins with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets (OWASP's "CSV
injection"). Such text cells get a leading ``'``, which spreadsheets show as text and drop from the
value; numbers, and text that is a plain number (a negative score), are left as they are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def csv_line(fields: Sequence[Any]) -> str:
    """One CSV record, cells neutralised, with its line ending."""
    out = io.StringIO()
    csv.writer(out).writerow([safe_cell(field) for field in fields])
    return out.getvalue()


def csv_document(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    return csv_line(header) + "".join(csv_line(row) for row in rows)
