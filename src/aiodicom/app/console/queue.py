"""The approval queue: enrolments and CSRs that wait for an organization's administrator.

A console user with ``role = "requester"`` (or any request sent with ``queue: true``) files a
request instead of getting a certificate; an administrator of that organization (or of every
organization) approves it, which enrols or signs exactly what was asked, or rejects it with a
reason. Nobody approves their own request. Requests live in DIR/console/requests.json.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aiodicom.app.pki.files import locked, utcnow, write_file
from aiodicom.errors import ConfigurationError

__all__ = ["Request", "RequestQueue"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    id: str
    kind: str
    """"enrol" (the console makes the key) or "csr" (the modality's request)."""
    requested_by: str
    org: str | None
    ae_titles: tuple[str, ...]
    groups: tuple[str, ...]
    days: int
    format: str = "pem"
    csr: str = ""
    created: str
    status: str = "pending"
    """pending, approved or rejected."""
    decided_by: str | None = None
    reason: str | None = None
    serial: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ae_titles"], data["groups"] = list(self.ae_titles), list(self.groups)
        return data

    def public(self) -> dict[str, Any]:
        """What pages and /api show (the CSR itself reduced to whether there is one)."""
        data = self.to_json()
        data["csr"] = bool(self.csr)
        return data


class RequestQueue:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.path = state / "requests.json"

    def all(self) -> list[Request]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise ConfigurationError(f"{self.path} is damaged ({exc})") from exc
        return [Request(**{**d, "ae_titles": tuple(d["ae_titles"]),
                           "groups": tuple(d["groups"])}) for d in data]

    def _save(self, requests: list[Request]) -> None:
        text = json.dumps([r.to_json() for r in requests], indent=2) + "\n"
        write_file(self.path, text.encode(), force=True, mode=0o600)

    def file(self, **fields: Any) -> Request:
        with locked(self.state):
            requests = self.all()
            request = Request(id=secrets.token_hex(6), created=utcnow().isoformat(
                timespec="seconds"), **fields)
            requests.append(request)
            self._save(requests)
        return request

    def get(self, request_id: str) -> Request:
        for request in self.all():
            if request.id == request_id:
                return request
        raise ConfigurationError(f"no request {request_id!r}")

    def decide(self, request_id: str, **changes: Any) -> Request:
        with locked(self.state):
            requests = self.all()
            for i, request in enumerate(requests):
                if request.id == request_id:
                    if request.status != "pending":
                        raise ConfigurationError(f"request {request_id} is already "
                                                 f"{request.status}")
                    requests[i] = replace(request, **changes)
                    self._save(requests)
                    return requests[i]
        raise ConfigurationError(f"no request {request_id!r}")
