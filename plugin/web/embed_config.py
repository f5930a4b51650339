"""``EmbedApiConfig``: the machine endpoint of ``gemsearch serve`` (``POST /api/embed``) — its bearer
token, the URL prefixes it may fetch images from, and its batch size. Pydantic only (no FastAPI)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "GEMSEARCH_EMBED_TOKEN"
MIN_TOKEN_CHARS = 16


class EmbedApiConfig(BaseModel):
    """The embedding endpoint: on when this block is configured; it always asks for a bearer token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_file: Path | None = Field(
        None, description="file holding the bearer token (first line); else the variable token_env"
    )
    token_env: str = Field(DEFAULT_TOKEN_ENV, description="environment variable holding the token")
    url_prefixes: tuple[str, ...] = Field(
        (), description="http(s) URL prefixes images may be fetched from (none: base64 only)"
    )
    max_batch: int = Field(16, ge=1, le=256, description="most images in one request")
    fetch_timeout_s: float = Field(10, gt=0, description="seconds to fetch one image URL")

    @field_validator("url_prefixes")
    @classmethod
    def _plain_prefixes(cls, prefixes: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in prefixes:
            parts = urlsplit(prefix)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"URL prefix {prefix!r} must be an http(s) URL with a host")
            if parts.username or parts.password or parts.query or parts.fragment:
                raise ValueError(f"URL prefix {prefix!r} may hold no credentials, query or fragment")
        return prefixes

    def token(self, env: Mapping[str, str] | None = None) -> str:
        """The bearer token; ConfigError when none is configured or it is too short to be secret."""
        env = os.environ if env is None else env
        if self.token_file is not None:
            try:
                lines = self.token_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read the embed token file {self.token_file}: {exc}") from exc
            token, source = (lines[0].strip() if lines else ""), str(self.token_file)
            if self.token_file.stat().st_mode & 0o077:
                log.warning("%s holds a token and is readable by other users; chmod 600 it", source)
        else:
            token, source = env.get(self.token_env, "").strip(), f"${self.token_env}"
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"the embedding API needs a bearer token of at least {MIN_TOKEN_CHARS} characters in "
                f"{source} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return token

    def relative_to(self, base: Path) -> EmbedApiConfig:
        if self.token_file is None or self.token_file.is_absolute():
            return self
        return self.model_copy(update={"token_file": base / self.token_file})
