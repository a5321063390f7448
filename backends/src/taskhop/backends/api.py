"""Calling other APIs from a handler, with answers mapped onto the retry policy (httpx).

``ApiClient`` wraps an ``httpx.Client`` and turns each answer into the core's control flow,
the way the tasker seed's ApiHandler does: 400, 401, 403, 404 and 422 raise ``PermanentError``
(retrying cannot help); 408, 429 and 500-504 raise ``Retry``, after the ``Retry-After`` delay
when the server gives one; connection errors and timeouts raise ``Retry`` too. The worker's
retry policy then decides, as for any handler error.
"""

from __future__ import annotations

from typing import Any

import httpx
from taskhop.sdk import PermanentError, Retry

from ._retry_after import retry_after

__all__ = ["ApiClient", "AsyncApiClient", "raise_for_retry"]

PERMANENT = frozenset({400, 401, 403, 404, 422})
RETRYABLE = frozenset({408, 429, 500, 501, 502, 503, 504})


def raise_for_retry(response: httpx.Response) -> httpx.Response:
    """Return a successful response; raise ``PermanentError`` or ``Retry`` for the rest."""
    status = response.status_code
    if status < 400:
        return response
    what = f"{response.request.method} {response.request.url} answered {status}"
    detail = response.text[:200].strip()
    message = f"{what}: {detail}" if detail else what
    if status in RETRYABLE or (status >= 500 and status not in PERMANENT):
        raise Retry(message, after=retry_after(response))
    raise PermanentError(message)


class ApiClient:
    """A synchronous client whose failures speak the worker's retry language.

    Args:
        base_url: prefix for relative URLs.
        client: an ``httpx.Client`` to wrap (its settings are kept).
        transport: an httpx transport for the default client (``MockTransport`` in tests).
        timeout: seconds per request for the default client.
        headers: headers sent with every request (API keys, user agent).

    """

    def __init__(
        self,
        base_url: str = "",
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.client = client or httpx.Client(
            base_url=base_url, transport=transport, timeout=timeout, headers=headers
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; connection trouble and retryable answers raise ``Retry``."""
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise Retry(f"{method} {url}: {exc}") from exc
        return raise_for_retry(response)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", ...)``."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``request("POST", ...)``."""
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        """Close the client."""
        self.client.close()


class AsyncApiClient:
    """The async twin of ``ApiClient``, for ``async def`` handlers."""

    def __init__(
        self,
        base_url: str = "",
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.client = client or httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout, headers=headers
        )

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; connection trouble and retryable answers raise ``Retry``."""
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise Retry(f"{method} {url}: {exc}") from exc
        return raise_for_retry(response)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", ...)``."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``request("POST", ...)``."""
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()
