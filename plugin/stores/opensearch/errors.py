"""OpenSearch transport errors as StoreErrors a user can act on: which cluster, what went wrong, and
the setting or command that fixes it, in one line (never a password).

``store_error`` is the one translation; the store, the index admin functions and the CLI use it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import weakref
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from opensearchpy.exceptions import (
    AuthenticationException,
    AuthorizationException,
    ConnectionError,
    ConnectionTimeout,
    NotFoundError,
    SSLError,
    TransportError,
)

from ....errors import NoIndexError, StoreError
from .connection import ENV_PREFIX, OpenSearchConfig
from .permissions import denied

__all__ = ["StoreError", "cluster_urls", "remember_config", "store_error", "translated"]

P = ParamSpec("P")
R = TypeVar("R")

# the settings by their library names; the CLI names its options instead (gemsearch.cli.CLI_WORDS)
URL_FIX = f"Set the URL with the urls setting or {ENV_PREFIX}URL."
CREDENTIALS_FIX = f"check {ENV_PREFIX}USER/_PASSWORD or the user/password settings"

# the settings each client was made from (make_client records them), to name its URLs in errors
_CONFIGS: weakref.WeakKeyDictionary[Any, OpenSearchConfig] = weakref.WeakKeyDictionary()
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^)'\"\]]+)")


def remember_config(client: Any, config: OpenSearchConfig) -> None:
    """Note which settings ``client`` was made from (for the URL and credential hints of errors)."""
    with contextlib.suppress(TypeError):  # a client that cannot be weakly referenced gets no hints
        _CONFIGS[client] = config


def cluster_urls(client: Any = None, config: OpenSearchConfig | None = None) -> str:
    """The cluster's URLs as the user configured them (or as the client holds them)."""
    config = config or _config_of(client)
    if config is not None:
        return ", ".join(config.urls)
    hosts = getattr(getattr(client, "transport", None), "hosts", None) or []
    urls = [
        f"{'https' if h.get('use_ssl') or h.get('scheme') == 'https' else 'http'}://{h.get('host')}"
        f"{':' + str(h['port']) if h.get('port') else ''}{h.get('url_prefix') or ''}"
        for h in hosts
        if isinstance(h, dict)
    ]
    return ", ".join(urls) or "the configured URL"


def store_error(
    exc: TransportError,
    client: Any = None,
    *,
    config: OpenSearchConfig | None = None,
    index: str | None = None,
    prefix: str | None = None,
    model: str | None = None,
) -> StoreError:
    """``exc`` (an opensearch-py error) as a StoreError whose one-line message names the cluster's
    URL and the fix. ``index`` is the index or alias the request named; ``prefix`` and ``model`` say
    which model's alias it was, for the hint to ingest it first."""
    config = config or _config_of(client)
    url = cluster_urls(client, config)
    defaulted = config is not None and "urls" not in config.model_fields_set
    if isinstance(exc, SSLError):
        reason = _reason(exc)
        if "mismatch" in reason:  # verified, but issued to another name
            return StoreError(
                f"TLS with OpenSearch at {url} failed ({reason}): write the URL with a host name or "
                "address the node's certificate names"
            )
        return StoreError(
            f"TLS with OpenSearch at {url} failed ({reason}): check {ENV_PREFIX}CA_CERTS "
            "(the CA that signed the cluster's certificate) or the URL's scheme"
        )
    if isinstance(exc, ConnectionTimeout):
        timeout = f" within {config.timeout:g}s" if config is not None else ""
        return StoreError(
            f"OpenSearch at {url} did not answer{timeout}; is the cluster up and not overloaded? "
            f"Raise the timeout with {ENV_PREFIX}TIMEOUT, or {URL_FIX[0].lower()}{URL_FIX[1:]}"
        )
    if isinstance(exc, ConnectionError):
        if defaulted:
            return StoreError(
                f"cannot reach OpenSearch at {url} ({_reason(exc)}), the default: no URL was configured. "
                + URL_FIX
            )
        return StoreError(f"cannot reach OpenSearch at {url} ({_reason(exc)}); is the cluster up? " + URL_FIX)
    if isinstance(exc, AuthenticationException):
        if config is not None and not config.user and not config.aws_region:
            return StoreError(
                f"OpenSearch at {url} asks for credentials (401) and none were given: set "
                f"{ENV_PREFIX}USER/_PASSWORD or the user/password settings"
            )
        return StoreError(f"OpenSearch at {url} refused the credentials (401): {CREDENTIALS_FIX}")
    if isinstance(exc, AuthorizationException):
        who = f"user {config.user!r}" if config is not None and config.user else "these credentials"
        return StoreError(denied(exc.info, url, who, index))
    if isinstance(exc, NotFoundError):
        if model and prefix:
            return NoIndexError(
                f"there is no index for model {model} under prefix {prefix!r} at {url} (no alias "
                f"{index or f'{prefix}-{model}'}): ingest images first with `gemsearch ingest ... "
                f"--opensearch {url.split(', ')[0]}`, or create it with `gemsearch index create`",
                model,
            )
        what = f"index or alias {index}" if index else "the index"
        return StoreError(f"{what} does not exist at OpenSearch {url}")
    status = exc.status_code if isinstance(exc.status_code, int) else "no status"
    on = f" on {index}" if index else ""
    return StoreError(f"OpenSearch at {url} answered {status}{on}: {_reason(exc)}")


def translated(func: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """``func(client, ...)`` with the transport errors it lets through turned into ``store_error``s."""

    @functools.wraps(func)
    def wrapper(client: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(client, *args, **kwargs)
        except TransportError as exc:
            raise store_error(exc, client) from exc

    return wrapper


def _config_of(client: Any) -> OpenSearchConfig | None:
    if client is None:
        return None
    try:
        return _CONFIGS.get(client)
    except TypeError:  # pragma: no cover
        return None


def _reason(exc: TransportError) -> str:
    """The short reason of ``exc``: "connection refused", or the cluster's error type and reason."""
    if isinstance(exc, ConnectionError):
        text = str(exc.info if exc.info is not None else exc.error)
        found = _ERRNO.search(text)
        if found:
            return found.group(1).strip().lower()
        return text.splitlines()[0][:200] if text else type(exc).__name__
    info = exc.info
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        error = info["error"]
        reason = error.get("reason") or ""
        return f"{error.get('type', exc.error)}: {reason}"[:300]
    return str(exc.error)[:300]
