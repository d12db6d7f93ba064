"""Object-store URLs: ``az://container/prefix``, ``s3://bucket/prefix``, ``gs://bucket/prefix``.

One place parses these URLs and opens an obstore store for them, so the archive (``--storage``),
the trust sources (``--ca`` and kin) and ``aiodicom pki publish`` agree on what a URL means and
where its credentials come from. obstore is imported only inside :func:`open_store`: a plain
``aiodicom serve`` never loads it (issue 18's RSS floor).

Credentials and endpoints come from the usual environment variables, read here and passed on
(obstore's builders also read the rest of each family themselves):

========  =================================================================================
az://     ``AZURE_STORAGE_ACCOUNT_NAME``, ``AZURE_STORAGE_ACCOUNT_KEY`` (or
          ``AZURE_STORAGE_SAS_KEY``, or managed identity / ``AZURE_CLIENT_ID`` +
          ``AZURE_CLIENT_SECRET`` + ``AZURE_TENANT_ID``), ``AZURE_STORAGE_ENDPOINT``
          (e.g. Azurite's ``http://127.0.0.1:10000/devstoreaccount1``)
s3://     ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``, or an
          instance/role profile), ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``),
          ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph, R2 ...)
gs://     ``GOOGLE_APPLICATION_CREDENTIALS`` or ``GOOGLE_SERVICE_ACCOUNT`` (a service
          account JSON file), else the metadata server; ``GOOGLE_SERVICE_ACCOUNT_KEY``
========  =================================================================================

Plain ``http://`` is allowed only for an endpoint on ``127.0.0.1``, ``::1`` or ``localhost``
(emulators); anything else must be HTTPS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

__all__ = ["StoreURL", "is_store_url", "open_store", "parse_store_url", "path_or_url"]

Scheme = Literal["az", "s3", "gs"]

_SCHEMES: dict[str, Scheme] = {"az": "az", "s3": "s3", "gs": "gs"}
# Container (Azure) and bucket (S3, GCS) names: 3-63 characters of lowercase letters, digits,
# dots, hyphens and (GCS) underscores, starting and ending with a letter or digit. Checked
# loosely here (the service has the last word) so a typo fails before any network call.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreURL:
    """A parsed object-store URL: the scheme, the bucket (or container) and a key prefix.

    ``prefix`` has no leading or trailing ``/`` and may be empty; :meth:`key` joins it to a
    relative key.
    """

    scheme: Scheme
    bucket: str
    prefix: str

    def key(self, relative: str) -> str:
        """The full object key of ``relative`` under this URL's prefix."""
        relative = relative.strip("/")
        if not self.prefix:
            return relative
        return f"{self.prefix}/{relative}" if relative else self.prefix

    def __str__(self) -> str:
        tail = f"/{self.prefix}" if self.prefix else ""
        return f"{self.scheme}://{self.bucket}{tail}"


def is_store_url(text: str) -> bool:
    """True if ``text`` names an object store (``az://``, ``s3://``, ``gs://``), not a path.

    Says nothing about validity: :func:`parse_store_url` then gives the precise error.
    """
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in _SCHEMES


def path_or_url(text: str) -> Path | str:
    """A command-line value that may be a path or an object-store URL: the URL kept as
    text (``Path`` would fold its ``//``), anything else as a Path."""
    return text if is_store_url(text) else Path(text)


def parse_store_url(url: str) -> StoreURL:
    """Parse ``az://container/prefix``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

    Raises ValueError naming what is wrong: an unknown scheme, a missing or invalid bucket,
    a query/fragment/credentials in the URL, or a ``.``/``..`` segment in the prefix.
    Empty segments (``a//b``) and a trailing ``/`` are accepted and dropped.
    """
    if not is_store_url(url):
        raise ValueError(
            f"{url!r} is not an object-store URL: expected az://container/prefix, "
            "s3://bucket/prefix or gs://bucket/prefix"
        )
    parts = urlsplit(url.strip())
    scheme = _SCHEMES[parts.scheme.lower()]
    if "@" in parts.netloc:  # never echo what may be a secret
        url = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: an object-store URL takes no ?query or #fragment")
    if "@" in parts.netloc or parts.port is not None:
        raise ValueError(
            f"{url!r}: no credentials or port in the URL; credentials and endpoints come "
            "from the environment (see aiodicom.app.objstore)"
        )
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"{url!r}: the {_bucket_word(scheme)} name is missing")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(
            f"{url!r}: {bucket!r} is not a valid {_bucket_word(scheme)} name "
            "(3-63 lowercase letters, digits, '.', '-' or '_', starting and ending with a "
            "letter or digit)"
        )
    segments = [s for s in parts.path.split("/") if s]
    for segment in segments:
        if segment in (".", ".."):
            raise ValueError(f"{url!r}: the prefix may not contain '.' or '..' segments")
    return StoreURL(scheme=scheme, bucket=bucket, prefix="/".join(segments))


def _bucket_word(scheme: Scheme) -> str:
    return "container" if scheme == "az" else "bucket"


def _allow_http(endpoint: str | None) -> bool:
    """Plain HTTP only for a loopback endpoint (an emulator on this machine)."""
    if not endpoint:
        return False
    parts = urlsplit(endpoint)
    return parts.scheme == "http" and (parts.hostname or "") in _LOCAL_HOSTS


def _client_options(endpoint: str | None) -> ClientConfig:
    return {"allow_http": _allow_http(endpoint), "connect_timeout": "5s"}


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def open_store(
    url: str, *, environ: Mapping[str, str] | None = None, retry_timeout: float = 15.0
) -> tuple[ObjectStore, str]:
    """Open the store ``url`` names; return it and the key prefix (no trailing ``/``).

    The store is opened at the bucket's root and the prefix is returned apart, so callers
    build full keys themselves (``f"{prefix}/{key}"`` or :meth:`StoreURL.key`). No network
    call happens here: a wrong credential shows on first use. ``environ`` defaults to
    ``os.environ`` (tests pass their own). A request that fails for a retryable reason
    (connection refused, 5xx, timeout) is retried for ``retry_timeout`` seconds at most,
    3 times, then raises: a store that is down fails the operation in seconds, not the
    3 minutes of obstore's default.
    """
    parsed = parse_store_url(url)
    env = os.environ if environ is None else environ
    from datetime import timedelta

    retry: RetryConfig = {
        "max_retries": 3,
        "retry_timeout": timedelta(seconds=retry_timeout),
        "backoff": {"init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2), "base": 2},
    }

    try:
        return _build(parsed, env, retry), parsed.prefix
    except Exception as exc:  # obstore's builder refusing a setting (a malformed key...)
        from aiodicom.errors import ConfigurationError

        reason = str(exc).split("\n", 1)[0][:300]  # its first line, without the debug dump
        raise ConfigurationError(
            f"{parsed}: cannot open the store with the credentials and endpoint of the "
            f"environment: {reason}") from None


def _build(parsed: StoreURL, env: Mapping[str, str], retry: RetryConfig) -> ObjectStore:
    from obstore.store import AzureStore, GCSStore, S3Store

    store: ObjectStore
    if parsed.scheme == "az":
        endpoint = _env(env, "AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT")
        azure: dict[str, str] = {}
        account = _env(env, "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT")
        key = _env(env, "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY")
        if account:
            azure["account_name"] = account
        if key:
            azure["account_key"] = key
        if endpoint:
            azure["endpoint"] = endpoint
        store = AzureStore(
            parsed.bucket,
            client_options=_client_options(endpoint),
            retry_config=retry,
            **azure,  # type: ignore[arg-type]
        )
    elif parsed.scheme == "s3":
        endpoint = _env(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
        s3: dict[str, str] = {}
        region = _env(env, "AWS_REGION", "AWS_DEFAULT_REGION")
        access = _env(env, "AWS_ACCESS_KEY_ID")
        secret = _env(env, "AWS_SECRET_ACCESS_KEY")
        token = _env(env, "AWS_SESSION_TOKEN")
        if region:
            s3["region"] = region
        if access and secret:
            s3["access_key_id"] = access
            s3["secret_access_key"] = secret
            if token:
                s3["session_token"] = token
        if endpoint:
            s3["endpoint"] = endpoint
        store = S3Store(
            parsed.bucket,
            client_options=_client_options(endpoint),
            retry_config=retry,
            **s3,  # type: ignore[arg-type]
        )
    else:
        # GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_SERVICE_ACCOUNT_KEY:
        # read by obstore's builder itself (from_env).
        store = GCSStore(parsed.bucket, client_options=_client_options(None),
                         retry_config=retry)
    return store
