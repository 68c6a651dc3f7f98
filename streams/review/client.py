"""A small client of the review REST API, for scripts, benchmarks and scripted reviewers.

async with ReviewClient("http://127.0.0.1:8700", token, task="banking77") as client:
    for leased in await client.next(n=4):
        await client.answer(leased, labels=["card_arrival"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from loopline.schemas import RoutedItem


class ReviewAPIError(Exception):
    """A non-2xx answer: `status` and the service's `detail` (what to do)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Leased:
    """An item leased to this client."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.lease_id: str = raw["lease_id"]
        self.expires_at: str = raw["expires_at"]
        self.item = RoutedItem.model_validate(raw["item"])
        self.tokens: list[tuple[int, int]] | None = raw.get("tokens")

    @property
    def id(self) -> str:
        return self.item.id


class ReviewClient:
    def __init__(
        self, base_url: str, token: str, task: str, *, timeout_s: float = 30.0, **httpx_options
    ) -> None:
        self.task = task
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            **httpx_options,
        )

    async def __aenter__(self) -> ReviewClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def _path(self, rest: str) -> str:
        return f"/api/v1/tasks/{self.task}/{rest}"

    async def _call(self, method: str, rest: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, self._path(rest), **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ReviewAPIError(response.status_code, str(detail))
        return response

    async def next(self, n: int = 1) -> list[Leased]:
        response = await self._call("GET", "queue/next", params={"n": n})
        return [Leased(raw) for raw in response.json()["items"]]

    async def answer(
        self,
        leased: Leased,
        decision: str = "accept",
        labels: Sequence[str] = (),
        spans: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """Answer a leased item; returns {"answer": ..., "correction": ... or None}."""
        body = {
            "lease_id": leased.lease_id,
            "id": leased.id,
            "decision": decision,
            "labels": list(labels),
            "spans": list(spans),
        }
        return (await self._call("POST", "answers", json=body)).json()

    async def release(self, leased: Leased | str) -> None:
        lease_id = leased if isinstance(leased, str) else leased.lease_id
        await self._call("POST", f"leases/{lease_id}/release")

    async def renew(self, leased: Leased | str) -> str:
        lease_id = leased if isinstance(leased, str) else leased.lease_id
        return (await self._call("POST", f"leases/{lease_id}/renew")).json()["expires_at"]

    async def stats(self) -> dict[str, Any]:
        return (await self._call("GET", "stats")).json()
