from pathlib import Path

import pytest
from pydantic import ValidationError

from edc.config import PLACEHOLDER_SECRET, Settings


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
