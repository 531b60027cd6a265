"""The redaction rules one by one: each credential shape is found, and ordinary text with hashes,
UUIDs, versions and prose about tokens is left alone."""

from __future__ import annotations

import pytest

from holdfast.memory import redact
from holdfast.memory.security import RULES, Redactor

# One made-up credential per shape (none is real).
FOUND = [
    (
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----",
    ),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0 truncated by the page"),
    ("anthropic_key", "sk-ant-api03-" + "Ab1_" * 10),
    ("openai_key", "sk-proj-" + "A1b2C3d4" * 5),
    ("stripe_key", "sk_live_51HxYzAbCdEfGhIjKlMnOp"),
    ("stripe_key", "rk_test_51HxYzAbCdEfGhIjKlMnOp"),
    ("stripe_webhook_secret", "whsec_" + "a1B2" * 8),
    ("github_token", "ghp_" + "a1B2c3D4e5" * 4),
    ("github_token", "gho_" + "a1B2c3D4e5" * 4),
    ("github_token", "github_pat_11ABCDEFG0" + "aBcDeFgHiJ_" * 7),
    ("gitlab_token", "glpat-" + "a1B2c3D4e5" * 2),
    ("huggingface_token", "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("google_api_key", "AIza" + "SyA1234567890abcdefghijklmnopqrstuv"),
    ("google_oauth_token", "ya29." + "a0AfH6SMB" * 4),
    ("google_client_secret", "GOCSPX-" + "a1B2c3D4e5" * 3),
    ("slack_token", "xoxb-" + "1234567890-abcdefghij"),
    ("slack_token", "xapp-1-" + "A0123456789-abcdef"),
    ("slack_webhook", "https://hooks.slack.com/services/T0000000/B0000000/" + "X" * 24),
    ("discord_webhook", "https://discord.com/api/webhooks/1234567890/" + "a1B2c3D4e5" * 4),
    ("telegram_bot_token", "123456789:AA" + "a1B2c3D4e5f" * 3),
    ("twilio_api_key", "SK" + "0123456789abcdef" * 2),
    ("sendgrid_key", "SG." + "a1B2c3D4e5f6g7h8i9j0k1" + "." + "A" * 43),
    ("mailgun_key", "key-" + "0123456789abcdef" * 2),
    ("npm_token", "npm_" + "a1B2c3D4e5f6" * 3),
    ("pypi_token", "pypi-AgEIcHlwaS5vcmc" + "a1B2c3D4e5" * 6),
    ("docker_token", "dckr_pat_" + "a1B2c3D4e5" * 3),
    ("digitalocean_token", "dop_v1_" + "0123456789abcdef" * 4),
    ("shopify_token", "shpat_" + "0123456789abcdef" * 2),
    ("vault_token", "hvs." + "a1B2c3D4e5f6" * 3),
    ("databricks_token", "dapi" + "0123456789abcdef" * 2),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("bearer", "Authorization: Bearer abcdef0123456789ABCDEF"),
    ("basic_auth", "Authorization: Basic dXNlcjpodW50ZXIyMjI="),
    ("azure_storage_key", "AccountName=x;AccountKey=" + "a1B2c3D4e5+/" * 6 + "=="),
    ("url_password", "postgres://deploy:Hunter2Secret@db.internal:5432/app"),
    ("url_secret", "https://example.org/cb?code=abc123&state=1"),
    ("url_secret", "https://s3.example/x?X-Amz-Signature=deadbeef00&X-Amz-Date=1"),
    ("password", "pw: Hunter2"),
    ("password", "DB_PASSWORD=s3cr3t!"),
    ("password", "the password for the staging db is 'correct horse'"),
    ("password", "my password is hunter2"),
    ("secret", "client_secret = abcDEF123"),
    ("secret", "x-api-key: 0a1b2c3d4e5f"),
    ("secret", "token: abcdef123456"),
]

# The part of an example that must be gone (the whole example unless named here).
SECRET_PART = {
    "postgres://deploy:Hunter2Secret@db.internal:5432/app": "Hunter2Secret",
    "https://example.org/cb?code=abc123&state=1": "abc123",
    "https://s3.example/x?X-Amz-Signature=deadbeef00&X-Amz-Date=1": "deadbeef00",
    "pw: Hunter2": "Hunter2",
    "DB_PASSWORD=s3cr3t!": "s3cr3t",
    "the password for the staging db is 'correct horse'": "correct horse",
    "my password is hunter2": "hunter2",
    "client_secret = abcDEF123": "abcDEF123",
    "x-api-key: 0a1b2c3d4e5f": "0a1b2c3d4e5f",
    "token: abcdef123456": "abcdef123456",
    "Authorization: Bearer abcdef0123456789ABCDEF": "abcdef0123456789ABCDEF",
    "Authorization: Basic dXNlcjpodW50ZXIyMjI=": "dXNlcjpodW50ZXIyMjI",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0 truncated by the page": "MIIEpAIB",
}

KEPT = [
    "fixed in commit 3f2a9c1d5e6b7a8c9d0e1f2a3b4c5d6e7f8a9b0c",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "The token is expired and the password is required.",
    "We rotate the API key every 90 days.",
    "Upgrade to python 3.11.7 and numpy 1.26.4.",
    "The secret to good sourdough is patience.",
    "Ask Skye about the task; she knows the desk.",
    "See https://example.org/docs?page=2&lang=en for details.",
    "Alice Chen moved to Berlin last year.",
]


@pytest.mark.parametrize(("kind", "secret"), FOUND)
def test_every_credential_shape_is_redacted(kind: str, secret: str) -> None:
    cleaned, kinds = redact(f"note: {secret} (end)")
    assert kind in kinds
    assert SECRET_PART.get(secret, secret) not in cleaned
    assert "[REDACTED:" in cleaned and cleaned.endswith("(end)")


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == (text, [])


def test_every_rule_has_an_example_and_a_hint() -> None:
    kinds = {k for k, _ in FOUND}
    assert {r.kind for r in RULES} - kinds <= {
        "atlassian_token", "linear_key", "notion_token", "square_token", "age_secret_key",
        "grafana_token", "sentry_token", "newrelic_key", "postman_key", "discord_token",
        "mailchimp_key",
    }  # fmt: skip
    assert all(r.hints for r in RULES)


def test_redaction_is_idempotent_and_extra_patterns_apply() -> None:
    once, _ = redact("pw: Hunter2 and sk_live_51HxYzAbCdEfGhIjKlMnOp")
    assert redact(once) == (once, [])
    custom = Redactor([r"ACME-[0-9]{6}"])
    assert custom.redact("badge ACME-123456 ok") == ("badge [REDACTED:custom] ok", ["custom"])
