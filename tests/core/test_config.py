from pathlib import Path

import pytest
from pydantic import ValidationError

from edc.config import PLACEHOLDER_SECRET, Settings, format_id_list


def test_placeholder_secret_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="EDC_SECRET_KEY"):
        Settings(env="production", secret_key=PLACEHOLDER_SECRET)


def test_real_secret_accepted_in_production() -> None:
    s = Settings(env="production", secret_key="x" * 40)
    assert s.env == "production"


def test_database_defaults_to_sqlite_under_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/edc.sqlite3"


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDC_MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("EDC_SANDBOX", "bwrap")
    s = Settings()
    assert s.max_upload_bytes == 7 * 1024 * 1024
    assert s.sandbox == "bwrap"


def test_bad_sandbox_kind_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDC_SANDBOX", "chroot")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0", (0,)), ("2,3", (2, 3)), ("2-3", (2, 3)), ("0-1,4", (0, 1, 4)), ("6,0-1", (0, 1, 6))],
)
def test_cores_accept_lists_and_ranges(text: str, ids: tuple[int, ...]) -> None:
    assert Settings(cpus=text).cpu_ids == ids


def test_cores_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDC_CPUS", "0-1,4")
    assert Settings().cpu_ids == (0, 1, 4)


def test_gpus_accept_ranges_too() -> None:
    assert Settings(gpus="0-2,5").gpu_ids == ("0", "1", "2", "5")
    assert Settings(gpus="3,1").gpu_ids == ("3", "1")  # the order given is the order handed out


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "not an id"),
        ("cpu0", "not an id"),
        ("1,,2", "not an id"),
        ("-1", "not an id"),
        ("1-", "not an id"),
        ("0 - 1", "not an id"),
        ("3-1", "backwards"),
        ("0-1,1", "listed twice"),
        ("0-99999999", "beyond any machine"),
    ],
)
def test_garbage_core_lists_are_refused(bad: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings(cpus=bad)
    with pytest.raises(ValidationError, match=why):
        Settings(gpus=bad)


def test_id_lists_print_folded() -> None:
    assert format_id_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert format_id_list([]) == ""
