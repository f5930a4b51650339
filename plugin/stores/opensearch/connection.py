"""How to reach an OpenSearch cluster: URLs, basic auth, TLS, AWS SigV4 and timeouts.

Secrets come from environment variables or a config file (YAML or JSON), never from the command
line, where any user of the machine can read them in the process list. Precedence, lowest first:
defaults, the config file, the environment, explicit overrides (e.g. ``--url``).

Environment: ``GEMSEARCH_OPENSEARCH_URL`` (comma-separated URLs), ``..._USER``, ``..._PASSWORD``,
``..._CA_CERTS``, ``..._VERIFY_CERTS``, ``..._CLIENT_CERT``, ``..._CLIENT_KEY``, ``..._AWS_REGION``,
``..._AWS_SERVICE``, ``..._TIMEOUT`` and ``..._CONFIG`` (the config file's path).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, ValidationError, field_validator

from ...._deps import require
from ....errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "GEMSEARCH_OPENSEARCH_"
# environment suffix -> config field
_ENV_FIELDS = {
    "URL": "urls",
    "USER": "user",
    "PASSWORD": "password",
    "CA_CERTS": "ca_certs",
    "VERIFY_CERTS": "verify_certs",
    "CLIENT_CERT": "client_cert",
    "CLIENT_KEY": "client_key",
    "AWS_REGION": "aws_region",
    "AWS_SERVICE": "aws_service",
    "TIMEOUT": "timeout",
}
# the other variables of the prefix: the config file's path, and the test node's (docs/testing.md)
_OTHER_VARIABLES = ("CONFIG", "VERSION", "HEAP", "CACHE")
_warned: set[str] = set()  # each warning once per process, however many clients are made


class OpenSearchConfig(BaseModel):
    """Connection settings of one cluster. List every node's URL so the client can fail over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: tuple[str, ...] = ("http://localhost:9200",)
    user: str | None = None
    password: SecretStr | None = None
    ca_certs: FilePath | None = Field(None, description="CA bundle that signed the cluster's certificate")
    verify_certs: bool = True
    client_cert: FilePath | None = None
    client_key: FilePath | None = None
    aws_region: str | None = Field(None, description="sign requests with AWS SigV4 for this region")
    aws_service: Literal["es", "aoss"] = "es"
    timeout: float = Field(30.0, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(3, ge=0, description="transport retries on connection errors (next node)")

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        # "http://a:9200,http://b:9200" is two nodes, in a variable, a file or an --opensearch flag
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            value = [u.strip() for v in value for u in v.split(",") if u.strip()]
        return value

    @field_validator("urls")
    @classmethod
    def _plain_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        if not urls:
            raise ValueError("at least one URL is required")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                example = f"http://{url}" if "://" not in url else "http://localhost:9200"
                raise ValueError(f"{url!r} is not an http(s) URL: write it with its scheme, e.g. {example}")
            try:
                parts.port  # noqa: B018  (urlsplit checks the port only when asked)
            except ValueError:
                raise ValueError(f"{url!r} has no valid port, e.g. http://localhost:9200") from None
            if parts.username or parts.password:
                raise ValueError(
                    "credentials inside a URL would end up in logs and the process list; "
                    f"use {ENV_PREFIX}USER / {ENV_PREFIX}PASSWORD or a config file"
                )
        return urls

    @property
    def use_ssl(self) -> bool:
        return any(u.startswith("https://") for u in self.urls)

    @classmethod
    def load(
        cls,
        path: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> OpenSearchConfig:
        """Defaults < config file (``path`` or ``$GEMSEARCH_OPENSEARCH_CONFIG``) < env < overrides."""
        env = os.environ if env is None else env
        path = path or env.get(ENV_PREFIX + "CONFIG")
        values: dict[str, Any] = read_config_file(Path(path)) if path else {}
        values.update(_from_env(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        _check_user_and_password(values, env, path)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"invalid OpenSearch connection settings: {validation_summary(exc)}") from exc


def validation_summary(exc: ValidationError) -> str:
    """A pydantic error in one line: "field: message; ..." (no input values: they may hold secrets)."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"] if not isinstance(p, int)) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(field, list(OpenSearchConfig.model_fields), n=1)
            message = "unknown setting" + (f" (did you mean {close[0]!r}?)" if close else "")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    known = [ENV_PREFIX + key for key in (*_ENV_FIELDS, *_OTHER_VARIABLES)]
    for name in sorted(n for n in env if n.startswith(ENV_PREFIX) and n not in known):
        close = difflib.get_close_matches(name, known, n=1)
        _warn_once(f"unknown variable {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    return {name: env[ENV_PREFIX + key] for key, name in _ENV_FIELDS.items() if env.get(ENV_PREFIX + key)}


def _check_user_and_password(values: Mapping[str, Any], env: Mapping[str, str], path: Any) -> None:
    """Basic auth needs both halves: name the one that is missing, where it was expected."""
    for given, missing in (("user", "password"), ("password", "user")):
        if values.get(given) and not values.get(missing):
            variable = ENV_PREFIX + given.upper()
            where = variable if env.get(variable) else f"{given} in {path}" if path else given
            nor = f" (nor {missing} in {path})" if path else ""
            raise ConfigError(
                f"{where} is set but not {ENV_PREFIX}{missing.upper()}{nor}: basic auth needs both"
            )


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a YAML or JSON file (optionally under a top-level ``opensearch`` key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the OpenSearch config file {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid JSON/YAML: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("opensearch"), dict):
        data = data["opensearch"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    if "password" in data and path.stat().st_mode & 0o077:
        log.warning("%s holds a password and is readable by other users; chmod 600 it", path)
    return data


def client_kwargs(config: OpenSearchConfig) -> dict[str, Any]:
    """Keyword arguments for ``opensearchpy.OpenSearch`` (auth objects included)."""
    kwargs: dict[str, Any] = {
        "hosts": list(config.urls),
        "timeout": config.timeout,
        "max_retries": config.max_retries,
        "retry_on_timeout": False,  # a timed-out bulk is retried by our own loop, with backoff
        "use_ssl": config.use_ssl,
        "verify_certs": config.verify_certs,
        "ssl_show_warn": config.verify_certs,
    }
    if config.ca_certs is not None:
        kwargs["ca_certs"] = str(config.ca_certs)
    if config.client_cert is not None:
        kwargs["client_cert"] = str(config.client_cert)
    if config.client_key is not None:
        kwargs["client_key"] = str(config.client_key)
    if config.aws_region and config.user:
        raise ConfigError("choose one authentication: basic auth (user/password) or AWS SigV4, not both")
    if config.aws_region:
        kwargs.update(_aws_auth(config.aws_region, config.aws_service))
    elif config.user:
        password = config.password.get_secret_value() if config.password else ""
        kwargs["http_auth"] = (config.user, password)
    return kwargs


def _aws_auth(region: str, service: str) -> dict[str, Any]:
    boto3 = require("boto3", "aws")
    from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise ConfigError(
            "AWS SigV4 is configured but no AWS credentials were found "
            "(environment, ~/.aws/credentials, or an instance/task role)"
        )
    # AWSV4SignerAuth signs through requests, so the client must use the requests connection
    return {
        "http_auth": AWSV4SignerAuth(credentials, region, service),
        "connection_class": RequestsHttpConnection,
    }


def make_client(config: OpenSearchConfig | None = None) -> Any:
    """An ``opensearchpy.OpenSearch`` client for ``config`` (default: from the environment)."""
    from opensearchpy import OpenSearch

    from .errors import remember_config

    config = config or OpenSearchConfig.load()
    if config.use_ssl and not config.verify_certs:
        log.warning(
            "TLS certificates of %s are NOT verified (verify_certs is false): anyone on the network path "
            "can read the credentials and answers; set %sCA_CERTS instead",
            ", ".join(config.urls),
            ENV_PREFIX,
        )
    if config.user and not config.use_ssl:
        _warn_once(f"basic auth over http://: the password to {', '.join(config.urls)} travels unencrypted")
    client = OpenSearch(**client_kwargs(config))
    remember_config(client, config)
    return client
