"""The access policy (app/server/policy.py) as a table, and "would X be allowed Y?".

The check builds the association the question describes (a certificate of organization O
with groups OU..., a calling and a called AE title) and asks `AccessPolicy.decide`, so the
answer is the server's own. A proposed edit (the policy file's TOML, changed) is checked the
same way beside the policy in force, without being saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio.association import AssociationInfo
from aiodicom.app.server.policy import AccessPolicy, Service
from aiodicom.errors import ConfigurationError

__all__ = ["check_policy", "policy_rows"]

SERVICE_OF_OPERATION = {
    "C-ECHO": Service.VERIFICATION, "C-STORE": Service.STORAGE, "C-FIND": Service.QUERY,
    "C-GET": Service.RETRIEVE, "C-MOVE": Service.RETRIEVE,
    **{s.value: s for s in Service},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Identity:
    """The certificate facts a policy rule looks at."""

    organization: str | None
    groups: tuple[str, ...]
    subject: str = ""
    common_name: str = ""
    ae_titles: tuple[str, ...] = ()


def _load(path: Path | None) -> AccessPolicy | None:
    return AccessPolicy.load(path) if path is not None else None


def _rule_row(rule: Any) -> dict[str, Any]:
    return {
        "rule": rule.index,
        "organization": rule.organization,
        "group": rule.group,
        "plain": rule.plain,
        "calling_ae": list(rule.calling_ae) if rule.calling_ae is not None else None,
        "called_ae": list(rule.called_ae) if rule.called_ae is not None else None,
        "services": sorted(rule.services),
    }


def policy_rows(path: Path | None) -> dict[str, Any]:
    """{"file", "default", "rules": [...], "error"} of the policy in force."""
    try:
        policy = _load(path)
    except ConfigurationError as exc:
        return {"file": str(path), "default": None, "rules": [], "error": str(exc)}
    if policy is None:
        return {"file": None, "default": None, "rules": [],
                "error": "no policy file: every certificate the CA signed is admitted "
                         "(start with --policy FILE)"}
    return {"file": str(path), "default": policy.default,
            "rules": [_rule_row(r) for r in policy.rules], "error": None}


def _answer(policy: AccessPolicy, info: AssociationInfo, service: Service) -> dict[str, Any]:
    decision = policy.decide(info)
    allowed = decision.allowed and service.value in decision.services
    if allowed:
        why = (f"rule {decision.rule} allows {service.value}" if decision.rule is not None
               else "no rule matches and the default is allow")
    elif decision.allowed:
        why = (f"rule {decision.rule} admits the association but grants only "
               f"{', '.join(sorted(decision.services)) or 'nothing'}")
    else:
        why = decision.why or "refused by the default"
    return {"allowed": allowed, "rule": decision.rule, "why": why}


def check_policy(path: Path | None, data: dict[str, Any]) -> dict[str, Any]:
    """Would a certificate of ``organization``/``groups`` calling as ``calling_ae`` (to
    ``called_ae``) be allowed ``operation`` (C-MOVE, storage...)? Under the policy in force
    and, when given, under ``proposed`` (TOML text)."""
    from aiodicom.app.console.actions import ActionError

    operation = str(data.get("operation") or "C-ECHO").strip()
    service = SERVICE_OF_OPERATION.get(operation) or SERVICE_OF_OPERATION.get(operation.upper())
    if service is None:
        raise ActionError(f"unknown operation {operation!r}; one of "
                          f"{', '.join(SERVICE_OF_OPERATION)}")
    groups = data.get("groups") or []
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    calling = str(data.get("calling_ae") or "").strip()
    if not calling:
        raise ActionError("give the calling AE title")
    identity = _Identity(organization=str(data.get("organization") or "").strip() or None,
                         groups=tuple(str(g) for g in groups), common_name=calling,
                         ae_titles=(calling,))
    info = AssociationInfo(id=0, calling_ae_title=calling,
                           called_ae_title=str(data.get("called_ae") or "AIODICOM").strip(),
                           peer_address=None, identity=identity)
    result: dict[str, Any] = {"operation": operation, "service": service.value}
    try:
        current = _load(path)
    except ConfigurationError as exc:
        raise ActionError(str(exc)) from exc
    result["current"] = (_answer(current, info, service) if current is not None else
                         {"allowed": True, "rule": None, "why": "no policy file"})
    proposed = str(data.get("proposed") or "").strip()
    if proposed:
        try:
            result["proposed"] = _answer(
                AccessPolicy.from_toml(proposed, source="proposed policy"), info, service)
        except ConfigurationError as exc:
            raise ActionError(str(exc)) from exc
    return result
