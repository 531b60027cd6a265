"""Memory hygiene: secrets are redacted before anything is written, and recalled text that reads
like instructions to the agent is flagged so the caller can quote it rather than obey it.

Redaction is a rule set, not a guess: every credential format below has a fixed shape published
by its issuer (a prefix such as ``github_pat_`` or ``sk_live_``, a length, an alphabet), so a
pattern finds it with no false alarms on commit hashes, UUIDs or prose. Secrets without a shape
(a password, a webhook signature) are found by what names them: a key word (``password``,
``pw``, ``client_secret``, ``DB_PASSWORD``, ``x-api-key`` ...) followed by ``:``, ``=`` or
"is", a URL's user-info password, or a URL query parameter such as ``token=`` or ``sig=``.
:func:`redact_item` applies the rules to every field of an item (text, source, entities, tags,
evidence notes), and the store calls it on every path that writes (add, update, supersede,
import, the agent tools, extraction).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holdfast.memory.items import MemoryItem

REDACTED = "[REDACTED:{kind}]"


@dataclass(frozen=True)
class SecretRule:
    """One credential format: ``pattern`` matches it; the named group ``secret`` (or the whole
    match) is replaced."""

    kind: str
    pattern: re.Pattern[str]
    issuer: str
    hints: tuple[str, ...] = ()
    """Literals one of which every match contains (checked first, lower-cased, so most texts
    skip the pattern); empty means always run."""


def _rule(kind: str, issuer: str, pattern: str, *hints: str) -> SecretRule:
    return SecretRule(kind, re.compile(pattern), issuer, tuple(h.lower() for h in hints))


# Boundaries: a token must not be glued to more token characters on either side.
_L = r"(?<![A-Za-z0-9_-])"
_R = r"(?![A-Za-z0-9_-])"

RULES: tuple[SecretRule, ...] = (
    _rule(
        "private_key",
        "PEM / OpenSSH / PGP",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,-]*)",
        "PRIVATE KEY",
    ),
    _rule(
        "anthropic_key", "Anthropic", _L + r"sk-ant-[A-Za-z0-9]{2,12}-[A-Za-z0-9_-]{20,}", "sk-ant-"
    ),
    _rule(
        "openai_key", "OpenAI", _L + r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}", "sk-"
    ),
    _rule(
        "stripe_key",
        "Stripe",
        _L + r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}" + _R,
        "_live_",
        "_test_",
    ),
    _rule("stripe_webhook_secret", "Stripe", _L + r"whsec_[A-Za-z0-9+/=]{20,}", "whsec_"),
    _rule(
        "github_token",
        "GitHub",
        _L + r"gh[pousr]_[A-Za-z0-9]{30,}" + _R,
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
    ),
    _rule("github_token", "GitHub", _L + r"github_pat_[A-Za-z0-9_]{20,}" + _R, "github_pat_"),
    _rule(
        "gitlab_token",
        "GitLab",
        _L + r"gl(?:pat|dt|rt|ptt|soat|ft|imt|cbt|oas|agent)-[A-Za-z0-9_-]{20,}" + _R,
        "gl",
    ),
    _rule(
        "huggingface_token",
        "Hugging Face",
        _L + r"(?:hf|api_org)_[A-Za-z0-9]{30,}" + _R,
        "hf_",
        "api_org_",
    ),
    _rule(
        "aws_access_key",
        "AWS",
        _L + r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}" + _R,
        "AKIA",
        "ASIA",
        "ABIA",
        "ACCA",
        "AGPA",
        "AIDA",
        "AROA",
        "AIPA",
        "ANPA",
        "ANVA",
        "APKA",
    ),
    _rule("google_api_key", "Google", _L + r"AIza[0-9A-Za-z_-]{35}" + _R, "AIza"),
    _rule("google_oauth_token", "Google", _L + r"ya29\.[0-9A-Za-z_-]{20,}", "ya29."),
    _rule("google_client_secret", "Google", _L + r"GOCSPX-[A-Za-z0-9_-]{20,}", "GOCSPX-"),
    _rule("slack_token", "Slack", _L + r"xox[abposre]-[A-Za-z0-9-]{10,}", "xox"),
    _rule("slack_token", "Slack", _L + r"xapp-\d-[A-Za-z0-9-]{10,}", "xapp-"),
    _rule(
        "slack_webhook",
        "Slack",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
        "hooks.slack.com",
    ),
    _rule(
        "discord_webhook",
        "Discord",
        r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_-]{20,}",
        "discord",
    ),
    _rule(
        "discord_token", "Discord", _L + r"[MNO][A-Za-z\d_-]{23,27}\.[\w-]{6}\.[\w-]{27,}" + _R, "."
    ),
    _rule("telegram_bot_token", "Telegram", _L + r"\d{8,10}:AA[A-Za-z0-9_-]{33}" + _R, ":AA"),
    _rule("twilio_api_key", "Twilio", _L + r"SK[0-9a-fA-F]{32}" + _R, "SK"),
    _rule(
        "sendgrid_key",
        "SendGrid",
        _L + r"SG\.[A-Za-z0-9_-]{20,24}\.[A-Za-z0-9_-]{40,46}" + _R,
        "SG.",
    ),
    _rule("mailgun_key", "Mailgun", _L + r"key-[0-9a-f]{32}" + _R, "key-"),
    _rule("mailchimp_key", "Mailchimp", _L + r"[0-9a-f]{32}-us\d{1,2}" + _R, "-us"),
    _rule("npm_token", "npm", _L + r"npm_[A-Za-z0-9]{36}" + _R, "npm_"),
    _rule("pypi_token", "PyPI", _L + r"pypi-AgE[A-Za-z0-9_-]{50,}", "pypi-AgE"),
    _rule("docker_token", "Docker Hub", _L + r"dckr_pat_[A-Za-z0-9_-]{20,}", "dckr_pat_"),
    _rule("digitalocean_token", "DigitalOcean", _L + r"do[por]_v1_[a-f0-9]{64}" + _R, "_v1_"),
    _rule("shopify_token", "Shopify", _L + r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}" + _R, "shp"),
    _rule("atlassian_token", "Atlassian", _L + r"ATATT3[A-Za-z0-9_=-]{20,}", "ATATT3"),
    _rule("linear_key", "Linear", _L + r"lin_(?:api|oauth)_[A-Za-z0-9]{40}" + _R, "lin_"),
    _rule(
        "notion_token",
        "Notion",
        _L + r"(?:secret_[A-Za-z0-9]{43}|ntn_[A-Za-z0-9]{40,})" + _R,
        "secret_",
        "ntn_",
    ),
    _rule(
        "square_token",
        "Square",
        _L + r"(?:sq0(?:atp|csp)-[0-9A-Za-z_-]{22,}|EAAA[A-Za-z0-9_-]{60})",
        "sq0",
        "EAAA",
    ),
    _rule("databricks_token", "Databricks", _L + r"dapi[a-f0-9]{32}(?:-\d)?" + _R, "dapi"),
    _rule(
        "vault_token",
        "HashiCorp Vault",
        _L + r"hv[sbr]\.[A-Za-z0-9_-]{24,}",
        "hvs.",
        "hvb.",
        "hvr.",
    ),
    _rule("age_secret_key", "age", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", "AGE-SECRET-KEY-1"),
    _rule(
        "grafana_token",
        "Grafana",
        _L + r"(?:glsa_[A-Za-z0-9]{32}_[a-f0-9]{8}|glc_[A-Za-z0-9+/]{32,}={0,2})",
        "glsa_",
        "glc_",
    ),
    _rule("sentry_token", "Sentry", _L + r"sntr[ysu]_[A-Za-z0-9+/=_-]{40,}", "sntr"),
    _rule(
        "newrelic_key",
        "New Relic",
        _L + r"NR(?:AK|II|JS)-[A-Za-z0-9]{19,32}" + _R,
        "NRAK-",
        "NRII-",
        "NRJS-",
    ),
    _rule("postman_key", "Postman", _L + r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}" + _R, "PMAK-"),
    _rule("azure_storage_key", "Azure", r"(?i:(?<=AccountKey=))[A-Za-z0-9+/=]{40,}", "AccountKey="),
    _rule(
        "jwt",
        "JSON Web Token",
        _L + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        "eyJ",
    ),
    _rule(
        "bearer", "HTTP Authorization", r"(?i:(?<=\bbearer ))\s*[A-Za-z0-9._~+/=-]{16,}", "bearer"
    ),
    _rule(
        "basic_auth",
        "HTTP Authorization",
        r"(?i:(?<=\bbasic ))\s*[A-Za-z0-9+/]{12,}={0,2}",
        "basic",
    ),
)

# A URL's user-info password: scheme://user:PASSWORD@host
_URL_PASSWORD = re.compile(r"(?<=://)(?P<user>[^/\s:@?#]*):(?P<secret>[^/\s@?#]+)(?=@)")
# Query or fragment parameters that carry credentials.
_URL_PARAM = re.compile(
    r"(?i)(?<=[?&#;])(?P<key>(?:[a-z0-9]+[_.-])*(?:token|access[_-]?token|refresh[_-]?token|"
    r"id[_-]?token|api[_-]?key|apikey|key|secret|client[_-]?secret|password|passwd|pwd|auth|"
    r"sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|code|session|"
    r"sessionid|jwt|access[_-]?key))=(?P<secret>[^&#\s\"'<>]+)"
)
# A key word that names a secret, then ':', '=', ':=', '=>' or "is"/"was", then the value.
_NAMES = (
    r"password|passwd|passphrase|passcode|pw|pwd|secret|client[_ -]?secret|secret[_ -]?key|"
    r"private[_ -]?key|api[_ -]?key|apikey|access[_ -]?key|access[_ -]?token|auth[_ -]?token|"
    r"refresh[_ -]?token|session[_ -]?token|bearer[_ -]?token|token|credentials?|"
    r"aws[_ -]?secret[_ -]?access[_ -]?key|auth[_ -]?key|signing[_ -]?key|encryption[_ -]?key|"
    r"webhook[_ -]?secret|license[_ -]?key"
)
_ASSIGNED = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?P<key>(?:[A-Za-z0-9]+[_-])*(?:" + _NAMES + r"))(?![A-Za-z])"
    r"(?P<gap>(?:\s+(?:for|of|to|on)\s+(?:the\s+|my\s+|our\s+)?(?:[\w.@/-]{1,40}\s+){0,2}[\w.@/-]{1,40})?)"
    r"(?P<sep>\s*(?::=|=>|[:=])\s*|\s+(?:is|was|are)\s*[:=]?\s+)"
    r"(?P<val>\"[^\"\n]{1,300}\"|'[^'\n]{1,300}'|`[^`\n]{1,300}`|[^\s\"'`,;]{3,300})"
)
_WORDY = re.compile(r"[a-z]+")
_KEY_HINT = re.compile(r"pass|pw|secret|key|token|credential")


def _secret_like(value: str) -> bool:
    """Whether a bare value after "is"/"was" looks like a credential rather than a word
    ("the token is expired" names no secret; "the password is hunter2" does)."""
    v = value.rstrip(".!?)")
    if len(v) < 3:
        return False
    if _WORDY.fullmatch(v):
        return len(v) >= 20
    return any(c.isdigit() for c in v) or any(not c.isalnum() for c in v) or v[1:] != v[1:].lower()


class Redactor:
    """Applies :data:`RULES`, the URL rules and the key-word rule, plus any extra patterns."""

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self.rules = RULES + tuple(
            SecretRule("custom", re.compile(p), "configured") for p in extra_patterns
        )

    def redact(self, text: str) -> tuple[str, list[str]]:
        """``text`` with secrets replaced by ``[REDACTED:<kind>]``, and the kinds found."""
        found: list[str] = []
        lower = text.lower()
        for rule in self.rules:
            if rule.hints and not any(h in lower for h in rule.hints):
                continue
            text, n = rule.pattern.subn(REDACTED.format(kind=rule.kind), text)
            if n:
                found.append(rule.kind)
                lower = text.lower()
        if "://" not in text and "=" not in text and not _KEY_HINT.search(lower):
            return text, found

        def _url_password(m: re.Match[str]) -> str:
            if m.group("secret").startswith("[REDACTED"):
                return m.group(0)
            found.append("url_password")
            return m.group("user") + ":" + REDACTED.format(kind="url_password")

        text = _URL_PASSWORD.sub(_url_password, text)

        def _url_param(m: re.Match[str]) -> str:
            if m.group("secret").startswith("[REDACTED") or m.group("secret").startswith(
                "%5BREDACTED"
            ):
                return m.group(0)
            found.append("url_secret")
            return m.group("key") + "=" + REDACTED.format(kind="url_secret")

        text = _URL_PARAM.sub(_url_param, text)

        def _assigned(m: re.Match[str]) -> str:
            val = m.group("val")
            quoted = val[:1] in "\"'`"
            if "REDACTED" in val:
                return m.group(0)
            wordy_sep = re.search(r"(?i)\b(?:is|was|are)\b", m.group("sep"))
            if not quoted and wordy_sep and not _secret_like(val):
                return m.group(0)
            key = m.group("key").lower()
            found.append("password" if ("pass" in key or key in ("pw", "pwd")) else "secret")
            tail = ""
            if not quoted:
                stripped = val.rstrip(".)")
                tail = val[len(stripped) :]
            return (
                m.group("key")
                + m.group("gap")
                + m.group("sep")
                + REDACTED.format(kind="secret")
                + tail
            )

        text = _ASSIGNED.sub(_assigned, text)
        return text, found

    def redact_item(self, item: MemoryItem) -> tuple[MemoryItem, list[str]]:
        """``item`` with every field redacted: text, every source field (the URL above all),
        entities, tags and evidence notes; and the kinds found."""
        from holdfast.memory.items import Evidence

        found: list[str] = []

        def clean(value: str) -> str:
            out, kinds = self.redact(value)
            found.extend(kinds)
            return out

        text = clean(item.text)
        src = item.source
        changes: dict[str, Any] = {
            k: clean(v)
            for k, v in src.to_dict().items()
            if isinstance(v, str) and k in ("task", "session", "speaker", "path", "url", "tool")
        }
        source = replace(src, **changes) if changes else src
        entities = tuple(clean(e) for e in item.entities)
        tags = tuple(clean(t) for t in item.tags)
        evidence = tuple(Evidence(clean(e.ref), e.supports) for e in item.evidence)
        if not found:
            return item, []
        return (
            item.evolve(text=text, source=source, entities=entities, tags=tags, evidence=evidence),
            found,
        )


_DEFAULT = Redactor()


def redact(text: str) -> tuple[str, list[str]]:
    """``text`` with secrets replaced by ``[REDACTED:<kind>]``, and the kinds found."""
    return _DEFAULT.redact(text)


def redact_item(item: MemoryItem) -> tuple[MemoryItem, list[str]]:
    """Redact every field of ``item`` with the default rules (see :meth:`Redactor.redact_item`)."""
    return _DEFAULT.redact_item(item)


_INSTRUCTION = re.compile(
    r"(?i)\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|your)\s+"
    r"(?:instructions?|rules?|prompts?|messages?)"
    r"|\byou\s+(?:must|should)\s+now\b"
    r"|\b(?:system|developer)\s+prompt\b"
    r"|\bnew\s+instructions?\s*:"
    r"|^\s*(?:system|assistant)\s*:"
    r"|\b(?:run|execute)\s+(?:the\s+)?(?:following\s+)?(?:command|code|shell)\b"
    r"|\b(?:send|upload|exfiltrate|email)\s+(?:the\s+|all\s+|your\s+)?(?:credentials|secrets?|api\s+keys?|passwords?|tokens?)\b"
    r"|\bdo\s+not\s+tell\s+the\s+user\b",
    re.MULTILINE,
)


def instruction_like(text: str) -> bool:
    """True when the text reads like instructions aimed at an agent (possible prompt injection)."""
    return bool(_INSTRUCTION.search(text))
