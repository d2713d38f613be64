"""docs/configuration.md is what ``mosaic config docs`` writes from mosaic/settings.py:
every variable is in it, secrets never show a value, and a stale file fails here."""

from __future__ import annotations

import pytest

from app.ops.config_docs import DOC_PATH, render, rows
from mosaic.settings import Settings

pytestmark = pytest.mark.unit


def test_committed_reference_is_current() -> None:
    assert DOC_PATH.read_text() == render(), (
        "docs/configuration.md is out of date: run 'mosaic config docs'")


def test_every_setting_is_listed_once() -> None:
    variables = [row[1] for row in rows()]
    assert len(variables) == len(set(variables))
    expected = set()
    for name, field in Settings.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub is None:
            expected.add(f"MOSAIC_{name.upper()}")
        else:
            expected |= {f"MOSAIC_{name.upper()}__{s.upper()}" for s in sub}
    assert set(variables) == expected


def test_secrets_show_no_value() -> None:
    text = render()
    defaults = Settings()
    for secret in (defaults.nakama.server_key, defaults.postgres.password,
                   defaults.ingress.hmac_key, defaults.s3.secret_access_key):
        assert secret.get_secret_value() not in text
    assert "| `MOSAIC_NAKAMA__SERVER_KEY` | `SecretStr` | (secret) |" in text


def test_every_setting_has_a_meaning() -> None:
    empty = [row[1] for row in rows() if not row[4].strip()]
    assert not empty, f"settings without a meaning (comment them in mosaic/settings.py): {empty}"
    for line in render().splitlines():
        if line.startswith("| `MOSAIC_"):
            assert line.rstrip().removesuffix("|").rstrip().rsplit("|", 1)[1].strip(), line
