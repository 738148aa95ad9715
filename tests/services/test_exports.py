"""Exports are safe to open in a spreadsheet: no participant-chosen text becomes a formula."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.services.exports import csv_line, safe_cell
from tests.support.competition import bearer, zip_of
from tests.support.live_server import People

FORMULA_NAME = '=HYPERLINK("http:"&CHAR(47)&CHAR(47)&"evil.example","x")&".zip"'


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-3.5", "-3.5"),  # a plain negative number stays a number
        ("alice", "alice"),
        (-3.5, -3.5),
        (7, 7),
    ],
)
def test_a_cell_that_would_be_a_formula_is_text(cell: object, shown: object) -> None:
    assert safe_cell(cell) == shown


def test_a_record_round_trips_through_a_csv_reader() -> None:
    (row,) = csv.reader(io.StringIO(csv_line(["=1", 'quote " and, comma', 2])))
    assert row == ["'=1", 'quote " and, comma', "2"]


def test_an_uploaded_file_name_is_not_a_formula_in_the_admin_export(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    response = app_client.post(
        "/api/v1/submissions",
        files={"file": (FORMULA_NAME, zip_of(), "application/zip")},
        headers=bearer(people.alice[1]),
    )
    assert response.status_code == 201, response.text
    text = app_client.get("/api/v1/admin/submissions.csv", headers=bearer(people.root[1])).text
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["original_filename"] == "'" + FORMULA_NAME
