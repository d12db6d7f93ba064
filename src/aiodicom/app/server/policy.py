"""The access policy file: which organizations and groups may do what, by AE title.

PS3.15 B.12 leaves "the significance of any certificates exchanged" to "some site specified
security policy". This is aiodicom's: a TOML file of rules over the client certificate's
organization (subject O) and groups (subject OU), the calling and called AE titles, and the
services allowed (verification, storage, query, retrieve). The first rule that matches an
association decides; see docs/security.md, "The policy file".

Two checks use it: `make_authorizer` refuses an association no rule allows (A-ASSOCIATE-RJ,
before negotiation), and `make_request_filter` refuses a single request of a service the
deciding rule does not list (status 0x0124, "Refused: not authorized"). Each denial logs one
line that says why. `PolicyFile` reloads the file while the server runs and keeps the previous
policy when the new file is bad (an error is logged; at start a bad file is an error).

Fail closed: a rule grants only the services it lists (none without ``services``), and a peer
without a certificate (the plain port) matches only rules with ``plain = true``.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio.association import AssociationInfo
from aiodicom.app.server.reloading import PolledFiles
from aiodicom.core.dimse import (
    CEchoRQ,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    Message,
    NActionRQ,
    NEventReportRQ,
    Status,
    message_name,
)
from aiodicom.core.negotiation import (
    reject_called_ae_not_recognized,
    reject_calling_ae_not_recognized,
    reject_no_reason,
)
from aiodicom.core.pdu import AAssociateRJ, AAssociateRQ
from aiodicom.errors import ConfigurationError

__all__ = [
    "AccessPolicy",
    "Decision",
    "PolicyFile",
    "Rule",
    "Service",
    "describe_peer",
    "make_authorizer",
    "make_request_filter",
    "service_of",
]

log = logging.getLogger("aiodicom.policy")


class Service(enum.StrEnum):
    """The services a rule can allow, by the DIMSE requests they cover."""

    VERIFICATION = "verification"
    """C-ECHO (PS3.4 Annex A)."""
    STORAGE = "storage"
    """C-STORE, and storage commitment N-ACTION/N-EVENT-REPORT (PS3.4 Annexes B, J)."""
    QUERY = "query"
    """C-FIND (PS3.4 Annex C)."""
    RETRIEVE = "retrieve"
    """C-GET and C-MOVE (PS3.4 Annex C)."""


ALL_SERVICES: frozenset[str] = frozenset(Service)

_SERVICE_OF: dict[type, Service] = {
    CEchoRQ: Service.VERIFICATION,
    CStoreRQ: Service.STORAGE,
    NActionRQ: Service.STORAGE,
    NEventReportRQ: Service.STORAGE,
    CFindRQ: Service.QUERY,
    CGetRQ: Service.RETRIEVE,
    CMoveRQ: Service.RETRIEVE,
}


def service_of(msg: Message) -> Service | None:
    """The service a request belongs to; None for messages no rule governs (C-CANCEL...)."""
    return _SERVICE_OF.get(type(msg))


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One ``[[rule]]`` table; every condition given must hold for the rule to match."""

    index: int
    """1-based position in the file, for messages."""
    organization: str | None = None
    """Equal to the certificate's subject O."""
    group: str | None = None
    """One of the certificate's subject OU values."""
    plain: bool | None = None
    """True: only associations without a certificate (the plain port); False or None: only
    with one. A plain-port peer is governed only by ``plain = true`` rules (fail closed: a
    rule naming just calling AE titles never admits a peer without a certificate)."""
    calling_ae: tuple[str, ...] | None = None
    """fnmatch patterns (``*``, ``?``, ``[...]``, case-sensitive); None matches any."""
    called_ae: tuple[str, ...] | None = None
    services: frozenset[str] = frozenset()
    """What the rule grants. Empty (``services = []`` or no ``services`` key, as in a file
    read half-written): a deny rule, matching associations are refused."""

    def matches_peer(self, identity: Any) -> bool:
        if identity is None:
            return self.plain is True
        if self.plain is True:
            return False
        if self.organization is not None and identity.organization != self.organization:
            return False
        return self.group is None or self.group in identity.groups


def _matches(patterns: tuple[str, ...] | None, regexes: tuple[re.Pattern[str], ...],
             value: str) -> bool:
    return patterns is None or any(r.fullmatch(value) for r in regexes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the policy says about one association."""

    allowed: bool
    services: frozenset[str]
    rule: int | None
    """The deciding rule's 1-based index; None when the default applied."""
    reason: int = 1
    """A-ASSOCIATE-RJ reason when refused: 3 calling AE, 7 called AE, 1 otherwise."""
    why: str = ""


class AccessPolicy:
    """The rules of one policy file, compiled for matching."""

    __slots__ = ("_compiled", "default", "rules", "source")

    def __init__(self, rules: Sequence[Rule], *, default: str = "deny",
                 source: str = "<policy>") -> None:
        if default not in ("allow", "deny"):
            raise ConfigurationError(
                f"{source}: key 'default' must be \"allow\" or \"deny\", got {default!r}")
        self.rules = tuple(rules)
        self.default = default
        self.source = source
        self._compiled = tuple(
            (_compile(r.calling_ae), _compile(r.called_ae)) for r in self.rules
        )

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<policy>") -> AccessPolicy:
        """Parse and validate; ConfigurationError names the key (and the rule) at fault."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source} is not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<policy>") -> AccessPolicy:
        for key in data:
            if key not in ("default", "rule"):
                raise ConfigurationError(
                    f"{source}: unknown key {key!r}; a policy file has 'default' and "
                    "[[rule]] tables")
        default = data.get("default", "deny")
        if not isinstance(default, str):
            raise ConfigurationError(
                f"{source}: key 'default' must be \"allow\" or \"deny\", got {default!r}")
        tables = data.get("rule", [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ConfigurationError(
                f"{source}: 'rule' must be an array of tables, written [[rule]]")
        rules = [_parse_rule(t, i, source) for i, t in enumerate(tables, 1)]
        return cls(rules, default=default, source=source)

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read policy file {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"policy file {path} is not UTF-8: {exc}") from exc
        return cls.from_toml(text, source=str(path))

    def decide(self, info: AssociationInfo) -> Decision:
        """The first rule matching the peer and both AE titles decides, else the default."""
        identity = info.identity
        calling = info.calling_ae_title.strip(" ")
        called = info.called_ae_title.strip(" ")
        peer_rules = calling_ok = 0
        for rule, (calling_re, called_re) in zip(self.rules, self._compiled, strict=True):
            if not rule.matches_peer(identity):
                continue
            peer_rules += 1
            if not _matches(rule.calling_ae, calling_re, calling):
                continue
            calling_ok += 1
            if not _matches(rule.called_ae, called_re, called):
                continue
            if not rule.services:
                return Decision(allowed=False, services=frozenset(), rule=rule.index, why=(
                    f"{describe_peer(identity)} calling AE {calling!r} called AE {called!r} "
                    f"is denied by rule {rule.index} (no services)"))
            return Decision(allowed=True, services=rule.services, rule=rule.index)
        who = f"{describe_peer(identity)} calling AE {calling!r}"
        if peer_rules == 0:
            if self.default == "allow":
                return Decision(allowed=True, services=ALL_SERVICES, rule=None)
            return Decision(allowed=False, services=frozenset(), rule=None, why=(
                f"{who} matches no rule and the default is deny"))
        if calling_ok == 0:
            return Decision(allowed=False, services=frozenset(), rule=None, reason=3, why=(
                f"{who} matches no rule's calling AE patterns for this peer"))
        return Decision(allowed=False, services=frozenset(), rule=None, reason=7, why=(
            f"{who} matches no rule allowing called AE {called!r}"))

    def allowed_services(self, info: AssociationInfo) -> frozenset[str]:
        """The services this association may use (empty when it is not allowed at all)."""
        return self.decide(info).services


def _compile(patterns: tuple[str, ...] | None) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(fnmatch.translate(p)) for p in patterns or ())


_RULE_KEYS = ("organization", "group", "plain", "calling_ae", "called_ae", "services")


def _parse_rule(table: Mapping[str, Any], index: int, source: str) -> Rule:
    where = f"{source}: rule {index}"
    for key in table:
        if key not in _RULE_KEYS:
            raise ConfigurationError(
                f"{where}: unknown key {key!r}; known keys: {', '.join(_RULE_KEYS)}")
    values: dict[str, Any] = {}
    for key in ("organization", "group"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(
                f"{where}: key {key!r} must be a non-empty string, got {value!r}")
        values[key] = value
    plain = table.get("plain")
    if plain is not None and not isinstance(plain, bool):
        raise ConfigurationError(f"{where}: key 'plain' must be true or false, got {plain!r}")
    if plain is True and (values["organization"] or values["group"]):
        raise ConfigurationError(
            f"{where}: key 'plain' = true matches associations without a certificate, which "
            "have no organization or group; remove 'organization'/'group' or 'plain'")
    for key in ("calling_ae", "called_ae"):
        values[key] = _patterns(table.get(key), key, where)
    services = table.get("services")
    if services is None:
        values["services"] = frozenset()  # fail closed: a rule grants only what it lists
    else:
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            raise ConfigurationError(
                f"{where}: key 'services' must be a list of strings, got {services!r}")
        unknown = [s for s in services if s not in ALL_SERVICES]
        if unknown:
            raise ConfigurationError(
                f"{where}: key 'services': unknown service {unknown[0]!r}; use "
                + ", ".join(s.value for s in Service))
        values["services"] = frozenset(services)
    return Rule(index=index, plain=plain, **values)


def _patterns(value: Any, key: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigurationError(
            f"{where}: key {key!r} must be a list of AE title patterns, got {value!r}")
    for p in value:
        if len(p.strip(" ")) == 0 or "\\" in p:
            raise ConfigurationError(f"{where}: key {key!r}: bad AE title pattern {p!r}")
    return tuple(p.strip(" ") for p in value)


def describe_peer(identity: Any) -> str:
    """``certificate O=... OU=...`` (or ``plain connection``) for log lines."""
    if identity is None:
        return "plain connection (no certificate)"
    groups = ",".join(identity.groups) or "-"
    return f"certificate O={identity.organization or '-'} OU={groups}"


class PolicyFile(PolledFiles):
    """A policy file that reloads itself when it changes, keeping the last good policy."""

    what = "policy"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__([self.path])
        self.policy = AccessPolicy.load(self.path)
        """The policy in force (replaced as a whole on a good reload)."""

    def _load(self) -> str:
        self.policy = AccessPolicy.load(self.path)
        return f": {len(self.policy.rules)} rule(s), default {self.policy.default}"


Authorizer = Callable[[AssociationInfo, AAssociateRQ], Awaitable[AAssociateRJ | None]]
RequestFilter = Callable[[AssociationInfo, Message], Status | None]

_REJECTS: dict[int, Callable[[], AAssociateRJ]] = {
    1: reject_no_reason,
    3: reject_calling_ae_not_recognized,
    7: reject_called_ae_not_recognized,
}


def make_authorizer(policy: PolicyFile | AccessPolicy) -> Authorizer:
    """A `Server(authorize=...)` check: refuse (permanent, service-user) what no rule allows."""

    async def authorize(info: AssociationInfo, rq: AAssociateRQ) -> AAssociateRJ | None:
        current = policy.policy if isinstance(policy, PolicyFile) else policy
        decision = current.decide(info)
        if decision.allowed:
            return None
        log.warning("association %d from %s refused by policy: %s", info.id,
                    info.peer_address, decision.why)
        return _REJECTS[decision.reason]()

    return authorize


def make_request_filter(policy: PolicyFile | AccessPolicy) -> RequestFilter:
    """A `Server(request_filter=...)` check: 0x0124 for a service the policy does not allow.

    Evaluated per request against the policy in force, so a reload that narrows the services
    applies to associations already open from their next request on.
    """

    def check(info: AssociationInfo, msg: Message) -> Status | None:
        service = service_of(msg)
        if service is None:
            return None
        current = policy.policy if isinstance(policy, PolicyFile) else policy
        decision = current.decide(info)
        if service in decision.services:
            return None
        where = f"rule {decision.rule}" if decision.rule is not None else "no rule"
        log.warning(
            "association %d: %s refused (0x0124 not authorized): %s calling AE %r may use %s "
            "(%s), not %s", info.id, message_name(msg), describe_peer(info.identity),
            info.calling_ae_title.strip(" "),
            ", ".join(sorted(decision.services)) or "nothing", where, service.value,
        )
        return Status.NOT_AUTHORIZED

    return check
