"""Where settings put the data directory (no stack)."""

from __future__ import annotations

from pathlib import Path

from devicehub import config, resources
from devicehub.config import Settings


def test_a_checkout_keeps_its_data_in_var():
    assert resources.CHECKOUT_DATA_DIR == resources.CHECKOUT_ROOT / "var"
    assert Settings.from_env({}).data_dir == resources.CHECKOUT_ROOT / "var"


def test_an_installed_package_uses_the_xdg_data_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "CHECKOUT_DATA_DIR", None)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.default_data_dir({"XDG_DATA_HOME": "/srv/data"}) == Path("/srv/data/devicehub")
    # The XDG spec: a relative XDG_DATA_HOME is ignored.
    assert config.default_data_dir({"XDG_DATA_HOME": "data"}) == tmp_path / ".local/share/devicehub"
    assert config.default_data_dir({}) == tmp_path / ".local/share/devicehub"


def test_the_data_directory_and_its_database_are_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"DEVICEHUB_DATA_DIR": "var"})
    assert settings.data_dir == tmp_path / "var"
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'devicehub.sqlite3'}"
