"""Robust HTTP downloads on the standard library: retries with exponential backoff,
HTTP Range resume, atomic completion and a byte progress bar.

Only transient failures are retried: HTTP 5xx, a connection reset or aborted, a timeout,
a body shorter than its ``Content-Length``. A 4xx answer is final (retrying a refusal only
delays the message). A host that cannot be reached at all (connection refused, name not
resolved) is reported at once as :class:`FetchError`, so an offline run fails fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_utils.files import sha256_file

USER_AGENT = "mammo-utils-fetch/1 (+https://github.com; research download)"
CHUNK_BYTES = 1 << 16


class FetchError(RuntimeError):
    """A download that cannot go on; ``str(err)`` is one line naming what failed and what
    to do instead."""


class TransientError(OSError):
    """A failure worth retrying (5xx, reset, timeout, short body)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` in all, sleeping ``backoff * 2**k`` seconds (at most
    ``max_backoff``) before attempt ``k + 1``; ``timeout`` bounds each socket operation."""

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    timeout: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return min(self.max_backoff, self.backoff * 2**attempt)


def build_url(base: str, endpoint: str, params: Mapping[str, str] | None = None) -> str:
    """``base/endpoint?params`` with exactly one slash between base and endpoint."""
    url = f"{base.rstrip('/')}/{endpoint.lstrip('/')}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    return url


def _is_unreachable(error: BaseException) -> bool:
    """True when the host refused the connection or its name did not resolve."""
    reason = getattr(error, "reason", error)
    return isinstance(reason, ConnectionRefusedError | socket.gaierror)


def _open(url: str, timeout: float, headers: Mapping[str, str], hint: str):
    """Open ``url``; raise FetchError for refusals and unreachable hosts, TransientError
    for what a retry may cure."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code >= 500:
            raise TransientError(f"HTTP {error.code} {error.reason} from {url}") from error
        raise FetchError(
            f"the server refused {url}: HTTP {error.code} {error.reason}. {hint}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        if _is_unreachable(error):
            host = urllib.parse.urlsplit(url).netloc
            reason = getattr(error, "reason", error)
            raise FetchError(f"cannot reach {host} ({reason}): offline? {hint}") from error
        raise TransientError(f"{url}: {getattr(error, 'reason', error)}") from error


def with_retries(action: Callable[[], Any], policy: RetryPolicy, what: str, hint: str) -> Any:
    """Run ``action`` until it succeeds, retrying :class:`TransientError` (and socket
    errors raised mid-transfer) with exponential backoff; FetchError passes through."""
    for attempt in range(policy.attempts):
        try:
            return action()
        except FetchError:
            raise
        except (TransientError, http.client.HTTPException, OSError) as error:
            if attempt + 1 == policy.attempts:
                raise FetchError(
                    f"{what} failed after {policy.attempts} attempts ({error}). {hint}"
                ) from error
            time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable: the loop returns or raises")


def get_json(url: str, policy: RetryPolicy, hint: str) -> Any:
    """GET ``url`` and decode its JSON body (retried like any download)."""

    def attempt() -> Any:
        with _open(url, policy.timeout, {"Accept": "application/json"}, hint) as response:
            body = response.read()
        if not body.strip():
            return []
        try:
            return json.loads(body)
        except json.JSONDecodeError as error:
            raise FetchError(f"{url} did not answer JSON ({error}). {hint}") from error

    return with_retries(attempt, policy, f"GET {url}", hint)


def _transfer_once(
    url: str, part: Path, policy: RetryPolicy, hint: str, on_bytes: Callable[[int], None]
) -> None:
    """One attempt: append to ``part`` from where it stops (Range), or restart it when the
    server ignores the range. Raises TransientError on a short body."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, policy.timeout, headers, hint)
    except FetchError as error:
        if have and "HTTP 416" in str(error):
            part.unlink()  # the partial file is longer than the resource: start over
            raise TransientError(f"{url}: stale partial download discarded") from error
        raise
    with response:
        resumed = have and response.status == 206
        expected = response.headers.get("Content-Length")
        received = 0
        with open(part, "ab" if resumed else "wb") as handle:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                handle.write(chunk)
                received += len(chunk)
                on_bytes(len(chunk))
    if expected is not None and received < int(expected):
        raise TransientError(f"{url}: connection closed after {received} of {expected} bytes")


def download(
    url: str,
    dest: Path,
    policy: RetryPolicy,
    hint: str,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> tuple[int, str]:
    """Download ``url`` to ``dest`` atomically and return ``(size, sha256)``.

    Bytes land in ``dest + '.part'``; an interrupted transfer resumes from there with an
    HTTP Range request (when the server honours it). Only a complete body is renamed to
    ``dest``, so a file under its final name is always whole.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with_retries(
        lambda: _transfer_once(url, part, policy, hint, on_bytes), policy, f"GET {url}", hint
    )
    size, digest = part.stat().st_size, sha256_file(part)
    os.replace(part, dest)
    return size, digest
