"""PS3.8 Table 9-10, cell by cell: every (state, event) pair, no sockets, no sleeps.

The expected actions come from an independent transcription (pynetdicom's
``TRANSITION_TABLE``, a test-only dependency); the expected next states are written out
here from PS3.8 §9.2.2 Tables 9-6 to 9-9.
"""

from __future__ import annotations

import pynetdicom.fsm as pynetdicom_fsm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.fsm import (
    EFFECTS,
    PDU_EVENTS,
    TRANSITIONS,
    Action,
    Artim,
    Event,
    Indication,
    State,
    Transport,
    effects,
    step,
)
from aiodicom.core.pdu import PDUType
from aiodicom.errors import LocalProtocolError

ORACLE: dict[tuple[State, Event], Action] = {
    (State(int(sta[3:])), Event(int(evt[3:]))): Action(act)
    for (evt, sta), act in pynetdicom_fsm.TRANSITION_TABLE.items()
}

S = State
# "Next state is ..." from PS3.8 §9.2.2; a pair is (if requestor/acceptable, otherwise).
NEXT: dict[Action, State | tuple[State, State]] = {
    Action.AE_1: S.STA4, Action.AE_2: S.STA5, Action.AE_3: S.STA6, Action.AE_4: S.STA1,
    Action.AE_5: S.STA2, Action.AE_6: (S.STA3, S.STA13), Action.AE_7: S.STA6,
    Action.AE_8: S.STA13, Action.DT_1: S.STA6, Action.DT_2: S.STA6,
    Action.AR_1: S.STA7, Action.AR_2: S.STA8, Action.AR_3: S.STA1, Action.AR_4: S.STA13,
    Action.AR_5: S.STA1, Action.AR_6: S.STA7, Action.AR_7: S.STA8,
    Action.AR_8: (S.STA9, S.STA10), Action.AR_9: S.STA11, Action.AR_10: S.STA12,
    Action.AA_1: S.STA13, Action.AA_2: S.STA1, Action.AA_3: S.STA1, Action.AA_4: S.STA1,
    Action.AA_5: S.STA1, Action.AA_6: S.STA13, Action.AA_7: S.STA13, Action.AA_8: S.STA13,
}  # fmt: skip

CELLS = [(state, event) for state in State for event in Event]
CONNECTED = set(State) - {State.STA1, State.STA4}


def test_the_table_has_13_by_19_cells_and_123_actions() -> None:
    assert len(CELLS) == 247
    assert len(TRANSITIONS) == 123
    assert set(NEXT) == set(Action)


@pytest.mark.parametrize(("state", "event"), CELLS, ids=[f"{s}-{e}" for s, e in CELLS])
def test_cell(state: State, event: Event) -> None:
    expected = ORACLE.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError, match=f"{event} .* not allowed in {state} "):
            step(state, event, requestor=True)
        with pytest.raises(LocalProtocolError):
            step(state, event, requestor=False, acceptable=False)
        # Every peer-driven event is covered wherever a transport connection exists.
        assert not (event in PDU_EVENTS and state in CONNECTED)
        return
    nxt = NEXT[expected]
    first, other = nxt if isinstance(nxt, tuple) else (nxt, nxt)
    if expected is Action.AR_8:
        assert step(state, event, requestor=True) == (expected, first)
        assert step(state, event, requestor=False) == (expected, other)
    else:
        assert step(state, event, requestor=True) == (expected, first)
        assert step(state, event, requestor=False, acceptable=False) == (expected, other)


@settings(max_examples=300, deadline=None)
@given(
    state=st.sampled_from(State),
    event=st.sampled_from(Event),
    requestor=st.booleans(),
    acceptable=st.booleans(),
)
def test_step_returns_a_cell_or_raises_local_protocol_error(
    state: State, event: Event, requestor: bool, acceptable: bool
) -> None:
    try:
        action, nxt = step(state, event, requestor=requestor, acceptable=acceptable)
    except LocalProtocolError:
        assert (state, event) not in TRANSITIONS
        return
    assert TRANSITIONS[(state, event)] is action
    assert isinstance(nxt, State)
    assert isinstance(effects(action, nxt).artim, Artim)


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS, key=str), ids=str)
def test_artim_runs_exactly_in_sta2_and_sta13(state: State, event: Event) -> None:
    """PS3.8 §9.1.5: ARTIM guards Sta2 and Sta13; every way in starts it, every way out stops."""
    for acceptable in (True, False):
        action, nxt = step(state, event, requestor=True, acceptable=acceptable)
        artim = effects(action, nxt).artim
        timed = {State.STA2, State.STA13}
        if nxt in timed and (state not in timed or action in {Action.AA_1, Action.AE_6}):
            assert artim is Artim.START
        elif nxt in timed:
            assert artim is Artim.KEEP  # AA-6, AA-7: already running in Sta13
        elif state in timed:
            assert artim is Artim.STOP
        else:
            assert artim is not Artim.START


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS, key=str), ids=str)
def test_transport_closed_on_every_way_to_sta1_unless_already_closed(
    state: State, event: Event
) -> None:
    action, nxt = step(state, event, requestor=True)
    closes = effects(action, nxt).transport is Transport.CLOSE
    assert closes == (nxt is State.STA1 and event is not Event.EVT17)


def test_effects_of_the_conditional_actions() -> None:
    ok = effects(Action.AE_6, State.STA3)
    assert ok.indicate is Indication.ASSOCIATE and ok.artim is Artim.STOP and ok.send is None
    refused = effects(Action.AE_6, State.STA13)
    assert refused.send is PDUType.A_ASSOCIATE_RJ and refused.artim is Artim.START
    assert refused.indicate is None
    assert effects(Action.AR_8, State.STA9) == effects(Action.AR_8, State.STA10)
    assert EFFECTS[Action.AR_8].indicate is Indication.RELEASE


def test_sends_match_the_standard() -> None:
    sends = {a: EFFECTS[a].send for a in Action if EFFECTS[a].send is not None}
    assert sends == {
        Action.AE_2: PDUType.A_ASSOCIATE_RQ,
        Action.AE_7: PDUType.A_ASSOCIATE_AC,
        Action.AE_8: PDUType.A_ASSOCIATE_RJ,
        Action.DT_1: PDUType.P_DATA_TF,
        Action.AR_7: PDUType.P_DATA_TF,
        Action.AR_1: PDUType.A_RELEASE_RQ,
        Action.AR_4: PDUType.A_RELEASE_RP,
        Action.AR_9: PDUType.A_RELEASE_RP,
        Action.AA_1: PDUType.A_ABORT,
        Action.AA_7: PDUType.A_ABORT,
        Action.AA_8: PDUType.A_ABORT,
    }


def test_names_and_definitions_quote_ps38() -> None:
    assert str(State.STA13) == "Sta13"
    assert State.STA2.definition == "Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)"
    assert str(Event.EVT19) == "Evt19"
    assert Event.EVT19.definition == "Unrecognized or invalid PDU received"
    assert str(Action.AR_10) == "AR-10"
    assert Action.AA_6.definition == "Ignore PDU"
    assert [s.value for s in State] == list(range(1, 14))
    assert [e.value for e in Event] == list(range(1, 20))
