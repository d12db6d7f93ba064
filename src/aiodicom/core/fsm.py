"""The PS3.8 §9.2 upper-layer state machine: states, events, actions and Table 9-10.

Theory of operation
-------------------
Everything PS3.8 says about *which* action follows *which* event sits here as data:
`State` (Tables 9-1 to 9-5), `Event` (the rows of Table 9-10), `Action` (Tables 9-6 to
9-9), `TRANSITIONS` (Table 9-10, transcribed cell by cell in the table's own shape) and
`EFFECTS` (what each action does, as data: the PDU it sends, the primitive it issues, what
it does to ARTIM and to the transport connection).

`step` is pure: given a state and an event it returns the action and the next state, or
raises `LocalProtocolError` for an empty cell. Two actions have a conditional next state and
`step` takes the condition as an argument rather than guessing: AE-6 (``acceptable``: is
the A-ASSOCIATE-RQ acceptable to the service provider?) and AR-8 (``requestor``: are we the
association-requestor?).

Empty cells are all of one kind. Every cell of a PDU-driven event (Evt3, 4, 6, 10, 12, 13,
16, 19) is filled for every state that has a transport connection (Sta2, 3, 5-13), so a
misbehaving peer can only ever lead to an action of the table (usually A-ABORT). The empty
cells are local requests made in the wrong state (our caller's mistake, hence
`LocalProtocolError`), PDUs "received" in Sta1 or Sta4 where no connection exists, Evt17 in
Sta1 and Evt18 where no ARTIM runs: the `UpperLayer` never produces the last three.

This module never sends, logs or calls user code; `aiodicom.core.upper_layer` applies the
effects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiodicom.core.pdu import PDUType
from aiodicom.errors import LocalProtocolError

__all__ = [
    "EFFECTS",
    "PDU_EVENTS",
    "TRANSITIONS",
    "Action",
    "Artim",
    "Effects",
    "Event",
    "Indication",
    "State",
    "Transport",
    "effects",
    "step",
]


class State(enum.Enum):
    """The 13 states of the DICOM UL state machine (PS3.8 §9.2.1, Tables 9-1 to 9-5).

    Each member carries the standard's ``definition`` text.
    """

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow Python

    definition: str

    def __new__(cls, number: int, definition: str) -> State:
        obj = object.__new__(cls)
        obj._value_ = number
        obj.definition = definition
        return obj

    def __str__(self) -> str:
        return f"Sta{self._value_}"

    # Table 9-1. No Association
    STA1 = 1, "Idle"
    # Table 9-2. Association Establishment
    STA2 = 2, "Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)"
    STA3 = 3, "Awaiting local A-ASSOCIATE response primitive (from local user)"
    STA4 = 4, (
        "Awaiting transport connection opening to complete (from local transport service)"
    )
    STA5 = 5, "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU"
    # Table 9-3. Data Transfer
    STA6 = 6, "Association established and ready for data transfer"
    # Table 9-4. Association Release
    STA7 = 7, "Awaiting A-RELEASE-RP PDU"
    STA8 = 8, "Awaiting local A-RELEASE response primitive (from local user)"
    STA9 = 9, (
        "Release collision requestor side; awaiting A-RELEASE response (from local user)"
    )
    STA10 = 10, "Release collision acceptor side; awaiting A-RELEASE-RP PDU"
    STA11 = 11, "Release collision requestor side; awaiting A-RELEASE-RP PDU"
    STA12 = 12, (
        "Release collision acceptor side; awaiting A-RELEASE response primitive "
        "(from local user)"
    )
    # Table 9-5. Waiting for Transport Connection Close
    STA13 = 13, (
        "Awaiting Transport Connection Close Indication (Association no longer exists)"
    )


class Event(enum.Enum):
    """The 19 events of the DICOM UL state machine (the rows of PS3.8 Table 9-10).

    Each member carries the standard's ``definition`` text.
    """

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow Python

    definition: str

    def __new__(cls, number: int, definition: str) -> Event:
        obj = object.__new__(cls)
        obj._value_ = number
        obj.definition = definition
        return obj

    def __str__(self) -> str:
        return f"Evt{self._value_}"

    EVT1 = 1, "A-ASSOCIATE Request (local user)"
    EVT2 = 2, "Transport Conn. Confirm (local transport service)"
    EVT3 = 3, "A-ASSOCIATE-AC PDU (received on transport connection)"
    EVT4 = 4, "A-ASSOCIATE-RJ PDU (received on transport connection)"
    EVT5 = 5, "Transport Connection Indication (local transport service)"
    EVT6 = 6, "A-ASSOCIATE-RQ PDU (received on transport connection)"
    EVT7 = 7, "A-ASSOCIATE response primitive (accept)"
    EVT8 = 8, "A-ASSOCIATE response primitive (reject)"
    EVT9 = 9, "P-DATA request primitive"
    EVT10 = 10, "P-DATA-TF PDU"
    EVT11 = 11, "A-RELEASE Request primitive"
    EVT12 = 12, "A-RELEASE-RQ PDU (received on open transport connection)"
    EVT13 = 13, "A-RELEASE-RP PDU (received on transport connection)"
    EVT14 = 14, "A-RELEASE Response primitive"
    EVT15 = 15, "A-ABORT Request primitive"
    EVT16 = 16, "A-ABORT PDU (received on open transport connection)"
    EVT17 = 17, "Transport connection closed indication (local transport service)"
    EVT18 = 18, "ARTIM timer expired (Association reject/release timer)"
    EVT19 = 19, "Unrecognized or invalid PDU received"


PDU_EVENTS: frozenset[Event] = frozenset(
    {
        Event.EVT3,
        Event.EVT4,
        Event.EVT6,
        Event.EVT10,
        Event.EVT12,
        Event.EVT13,
        Event.EVT16,
        Event.EVT19,
    }
)
"""Events caused by bytes from the peer: the table covers them in every connected state."""


class Action(enum.Enum):
    """The actions of PS3.8 §9.2.2 (Tables 9-6 to 9-9), with the standard's text."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is slow Python

    definition: str

    def __new__(cls, name: str, definition: str) -> Action:
        obj = object.__new__(cls)
        obj._value_ = name
        obj.definition = definition
        return obj

    def __str__(self) -> str:
        return str(self._value_)

    # Table 9-6. Association Establishment Related Actions
    AE_1 = "AE-1", "Issue TRANSPORT CONNECT request primitive to local transport service"
    AE_2 = "AE-2", "Send A-ASSOCIATE-RQ-PDU"
    AE_3 = "AE-3", "Issue A-ASSOCIATE confirmation (accept) primitive"
    AE_4 = "AE-4", (
        "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection"
    )
    AE_5 = "AE-5", "Issue Transport connection response primitive; start ARTIM timer"
    AE_6 = "AE-6", (
        "Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by service-provider: issue "
        "A-ASSOCIATE indication primitive (next state is Sta3); otherwise: issue "
        "A-ASSOCIATE-RJ-PDU and start ARTIM timer (next state is Sta13)"
    )
    AE_7 = "AE-7", "Send A-ASSOCIATE-AC PDU"
    AE_8 = "AE-8", "Send A-ASSOCIATE-RJ PDU and start ARTIM timer"
    # Table 9-7. Data Transfer Related Actions
    DT_1 = "DT-1", "Send P-DATA-TF PDU"
    DT_2 = "DT-2", "Send P-DATA indication primitive"
    # Table 9-8. Association Release Related Actions
    AR_1 = "AR-1", "Send A-RELEASE-RQ PDU"
    AR_2 = "AR-2", "Issue A-RELEASE indication primitive"
    AR_3 = "AR-3", "Issue A-RELEASE confirmation primitive, and close transport connection"
    AR_4 = "AR-4", "Issue A-RELEASE-RP PDU and start ARTIM timer"
    AR_5 = "AR-5", "Stop ARTIM timer"
    AR_6 = "AR-6", "Issue P-DATA indication"
    AR_7 = "AR-7", "Issue P-DATA-TF PDU"
    AR_8 = "AR-8", (
        "Issue A-RELEASE indication (release collision): if association-requestor, next "
        "state is Sta9; if not, next state is Sta10"
    )
    AR_9 = "AR-9", "Send A-RELEASE-RP PDU"
    AR_10 = "AR-10", "Issue A-RELEASE confirmation primitive"
    # Table 9-9. Association Abort Related Actions
    AA_1 = "AA-1", (
        "Send A-ABORT PDU (service-user source) and start (or restart if already started) "
        "ARTIM timer"
    )
    AA_2 = "AA-2", "Stop ARTIM timer if running. Close transport connection"
    AA_3 = "AA-3", (
        "If (service-user initiated abort): issue A-ABORT indication and close transport "
        "connection; otherwise (service-provider initiated abort): issue A-P-ABORT "
        "indication and close transport connection"
    )
    AA_4 = "AA-4", "Issue A-P-ABORT indication primitive"
    AA_5 = "AA-5", "Stop ARTIM timer"
    AA_6 = "AA-6", "Ignore PDU"
    AA_7 = "AA-7", "Send A-ABORT PDU"
    AA_8 = "AA-8", (
        "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and "
        "start ARTIM timer"
    )


# -- Table 9-10, in the table's own shape: one row per event, one column per state ---------

_: Action | None = None
AE_1, AE_2, AE_3, AE_4, AE_5, AE_6, AE_7, AE_8 = (
    Action.AE_1, Action.AE_2, Action.AE_3, Action.AE_4,
    Action.AE_5, Action.AE_6, Action.AE_7, Action.AE_8,
)  # fmt: skip
DT_1, DT_2 = Action.DT_1, Action.DT_2
AR_1, AR_2, AR_3, AR_4, AR_5, AR_6, AR_7, AR_8, AR_9, AR10 = (
    Action.AR_1, Action.AR_2, Action.AR_3, Action.AR_4, Action.AR_5,
    Action.AR_6, Action.AR_7, Action.AR_8, Action.AR_9, Action.AR_10,
)  # fmt: skip
AA_1, AA_2, AA_3, AA_4, AA_5, AA_6, AA_7, AA_8 = (
    Action.AA_1, Action.AA_2, Action.AA_3, Action.AA_4,
    Action.AA_5, Action.AA_6, Action.AA_7, Action.AA_8,
)  # fmt: skip

_TABLE_9_10: dict[Event, tuple[Action | None, ...]] = {
    #              Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
    Event.EVT1:  (AE_1, _,    _,    _,    _,    _,    _,    _,    _,    _,    _,    _,    _),
    Event.EVT2:  (_,    _,    _,    AE_2, _,    _,    _,    _,    _,    _,    _,    _,    _),
    Event.EVT3:  (_,    AA_1, AA_8, _,    AE_3, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),
    Event.EVT4:  (_,    AA_1, AA_8, _,    AE_4, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),
    Event.EVT5:  (AE_5, _,    _,    _,    _,    _,    _,    _,    _,    _,    _,    _,    _),
    Event.EVT6:  (_,    AE_6, AA_8, _,    AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_7),
    Event.EVT7:  (_,    _,    AE_7, _,    _,    _,    _,    _,    _,    _,    _,    _,    _),
    Event.EVT8:  (_,    _,    AE_8, _,    _,    _,    _,    _,    _,    _,    _,    _,    _),
    Event.EVT9:  (_,    _,    _,    _,    _,    DT_1, _,    AR_7, _,    _,    _,    _,    _),
    Event.EVT10: (_,    AA_1, AA_8, _,    AA_8, DT_2, AR_6, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),
    Event.EVT11: (_,    _,    _,    _,    _,    AR_1, _,    _,    _,    _,    _,    _,    _),
    Event.EVT12: (_,    AA_1, AA_8, _,    AA_8, AR_2, AR_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),
    Event.EVT13: (_,    AA_1, AA_8, _,    AA_8, AA_8, AR_3, AA_8, AA_8, AR10, AR_3, AA_8, AA_6),
    Event.EVT14: (_,    _,    _,    _,    _,    _,    _,    AR_4, AR_9, _,    _,    AR_4, _),
    Event.EVT15: (_,    _,    AA_1, AA_2, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, _),
    Event.EVT16: (_,    AA_2, AA_3, _,    AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_2),
    Event.EVT17: (_,    AA_5, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AR_5),
    Event.EVT18: (_,    AA_2, _,    _,    _,    _,    _,    _,    _,    _,    _,    _,    AA_2),
    Event.EVT19: (_,    AA_1, AA_8, _,    AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_7),
}  # fmt: skip

TRANSITIONS: dict[tuple[State, Event], Action] = {
    (state, event): action
    for event, row in _TABLE_9_10.items()
    for state, action in zip(State, row, strict=True)
    if action is not None
}
"""PS3.8 Table 9-10: the action for each filled (state, event) cell; absent cells are errors."""

del _TABLE_9_10, _, AE_1, AE_2, AE_3, AE_4, AE_5, AE_6, AE_7, AE_8, DT_1, DT_2
del AR_1, AR_2, AR_3, AR_4, AR_5, AR_6, AR_7, AR_8, AR_9, AR10
del AA_1, AA_2, AA_3, AA_4, AA_5, AA_6, AA_7, AA_8

_NEXT_STATE: dict[Action, State] = {
    Action.AE_1: State.STA4,
    Action.AE_2: State.STA5,
    Action.AE_3: State.STA6,
    Action.AE_4: State.STA1,
    Action.AE_5: State.STA2,
    Action.AE_7: State.STA6,
    Action.AE_8: State.STA13,
    Action.DT_1: State.STA6,
    Action.DT_2: State.STA6,
    Action.AR_1: State.STA7,
    Action.AR_2: State.STA8,
    Action.AR_3: State.STA1,
    Action.AR_4: State.STA13,
    Action.AR_5: State.STA1,
    Action.AR_6: State.STA7,
    Action.AR_7: State.STA8,
    Action.AR_9: State.STA11,
    Action.AR_10: State.STA12,
    Action.AA_1: State.STA13,
    Action.AA_2: State.STA1,
    Action.AA_3: State.STA1,
    Action.AA_4: State.STA1,
    Action.AA_5: State.STA1,
    Action.AA_6: State.STA13,
    Action.AA_7: State.STA13,
    Action.AA_8: State.STA13,
}
"""The unconditional "Next state is ..." of each action (PS3.8 Tables 9-6 to 9-9)."""


def step(
    state: State, event: Event, *, requestor: bool, acceptable: bool = True
) -> tuple[Action, State]:
    """The action Table 9-10 prescribes for ``event`` in ``state``, and the next state.

    ``requestor`` decides AR-8 (Sta9 on the association-requestor, Sta10 on the acceptor);
    ``acceptable`` decides AE-6 (Sta3 if the A-ASSOCIATE-RQ is acceptable to the service
    provider, else Sta13). Raises `LocalProtocolError` for an empty cell (see the module
    docstring for why that is always the caller's mistake). Pure: no side effects.
    """
    action = TRANSITIONS.get((state, event))
    if action is None:
        raise LocalProtocolError(
            f"{event} ({event.definition}) is not allowed in {state} ({state.definition}); "
            "PS3.8 Table 9-10 has no action for it"
        )
    if action is Action.AE_6:
        return action, State.STA3 if acceptable else State.STA13
    if action is Action.AR_8:
        return action, State.STA9 if requestor else State.STA10
    return action, _NEXT_STATE[action]


# -- What each action does, as data -------------------------------------------------------


class Artim(enum.Enum):
    """What an action does to the ARTIM timer (PS3.8 §9.1.5)."""

    KEEP = "keep"
    START = "start"
    """Start, or restart if already started."""
    STOP = "stop"


class Transport(enum.Enum):
    """What an action asks of the local transport service."""

    NONE = "none"
    CONNECT = "connect"
    """TRANSPORT CONNECT request (AE-1): the shell opens the connection."""
    ACCEPT = "accept"
    """Transport connection response (AE-5): the incoming connection is accepted."""
    CLOSE = "close"
    """Close the transport connection."""


class Indication(enum.Enum):
    """The service primitive an action issues to the local user (PS3.8 §7)."""

    ASSOCIATE = "A-ASSOCIATE indication"
    ASSOCIATE_ACCEPTED = "A-ASSOCIATE confirmation (accept)"
    ASSOCIATE_REJECTED = "A-ASSOCIATE confirmation (reject)"
    P_DATA = "P-DATA indication"
    RELEASE = "A-RELEASE indication"
    RELEASE_CONFIRMED = "A-RELEASE confirmation"
    ABORT = "A-ABORT or A-P-ABORT indication (by the received A-ABORT's source)"
    P_ABORT = "A-P-ABORT indication"


@dataclass(frozen=True, slots=True, kw_only=True)
class Effects:
    """What one action does, in the order it is applied: send, indicate, ARTIM, transport."""

    send: PDUType | None = None
    """The PDU the action sends to the peer, if any."""
    indicate: Indication | None = None
    """The primitive the action issues to the local user, if any."""
    artim: Artim = Artim.KEEP
    transport: Transport = Transport.NONE


EFFECTS: dict[Action, Effects] = {
    Action.AE_1: Effects(transport=Transport.CONNECT),
    Action.AE_2: Effects(send=PDUType.A_ASSOCIATE_RQ),
    Action.AE_3: Effects(indicate=Indication.ASSOCIATE_ACCEPTED),
    Action.AE_4: Effects(indicate=Indication.ASSOCIATE_REJECTED, transport=Transport.CLOSE),
    Action.AE_5: Effects(artim=Artim.START, transport=Transport.ACCEPT),
    Action.AE_6: Effects(indicate=Indication.ASSOCIATE, artim=Artim.STOP),
    Action.AE_7: Effects(send=PDUType.A_ASSOCIATE_AC),
    Action.AE_8: Effects(send=PDUType.A_ASSOCIATE_RJ, artim=Artim.START),
    Action.DT_1: Effects(send=PDUType.P_DATA_TF),
    Action.DT_2: Effects(indicate=Indication.P_DATA),
    Action.AR_1: Effects(send=PDUType.A_RELEASE_RQ),
    Action.AR_2: Effects(indicate=Indication.RELEASE),
    Action.AR_3: Effects(indicate=Indication.RELEASE_CONFIRMED, transport=Transport.CLOSE),
    Action.AR_4: Effects(send=PDUType.A_RELEASE_RP, artim=Artim.START),
    Action.AR_5: Effects(artim=Artim.STOP),
    Action.AR_6: Effects(indicate=Indication.P_DATA),
    Action.AR_7: Effects(send=PDUType.P_DATA_TF),
    Action.AR_8: Effects(indicate=Indication.RELEASE),
    Action.AR_9: Effects(send=PDUType.A_RELEASE_RP),
    Action.AR_10: Effects(indicate=Indication.RELEASE_CONFIRMED),
    Action.AA_1: Effects(send=PDUType.A_ABORT, artim=Artim.START),
    Action.AA_2: Effects(artim=Artim.STOP, transport=Transport.CLOSE),
    Action.AA_3: Effects(indicate=Indication.ABORT, transport=Transport.CLOSE),
    Action.AA_4: Effects(indicate=Indication.P_ABORT),
    Action.AA_5: Effects(artim=Artim.STOP),
    Action.AA_6: Effects(),
    Action.AA_7: Effects(send=PDUType.A_ABORT),
    Action.AA_8: Effects(send=PDUType.A_ABORT, indicate=Indication.P_ABORT, artim=Artim.START),
}
"""Each action's effects (PS3.8 §9.2.2); AE-6 here is its "acceptable" branch."""

_AE_6_NOT_ACCEPTABLE = Effects(send=PDUType.A_ASSOCIATE_RJ, artim=Artim.START)
"""AE-6 when the provider cannot accept the RQ: "issue A-ASSOCIATE-RJ-PDU and start ARTIM"
(stopping then starting ARTIM is a restart)."""


def effects(action: Action, next_state: State) -> Effects:
    """The effects of ``action`` as returned by `step` with ``next_state`` (AE-6 branches on it)."""
    if action is Action.AE_6 and next_state is State.STA13:
        return _AE_6_NOT_ACCEPTABLE
    return EFFECTS[action]
