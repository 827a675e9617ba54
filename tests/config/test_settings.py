from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.settings import load_settings


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEADSCORE_DATABASE_URL", "LEADSCORE_BROKER_URL", "LEADSCORE_VAR_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.effective_database_url == "sqlite:///var/leadscore.db"
    assert settings.eager


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_FLOWER_BASIC_AUTH", "admin:very-secret")
    settings = load_settings()
    assert "very-secret" not in repr(settings)
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == "admin:very-secret"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LEADSCORE_DATABASE_URL": "mysql://x"}, "LEADSCORE_DATABASE_URL"),
        ({"LEADSCORE_TASK_TIME_LIMIT": "99999"}, "visibility_timeout"),
        ({"LEADSCORE_VISIBILITY_TIMEOUT": "soon"}, "LEADSCORE_VISIBILITY_TIMEOUT"),
        ({"LEADSCORE_ENVIRONMENT": "production", "LEADSCORE_FLOWER_BASIC_AUTH": "admin:changeme"},
         "real password"),
        ({"LEADSCORE_ENVIRONMENT": "production", "LEADSCORE_FLOWER_BASIC_AUTH": "admin:admin"},
         "not a placeholder or the user name"),
        ({"LEADSCORE_ENVIRONMENT": "production", "LEADSCORE_FLOWER_BASIC_AUTH": "ops:short"},
         "at least 8 characters"),
    ],
)
def test_bad_environment_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()
