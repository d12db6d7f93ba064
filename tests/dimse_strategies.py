"""Hypothesis strategies for every DIMSE message (aiodicom.core.dimse)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from aiodicom.core.dimse import (
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    Priority,
    Status,
)

us = st.integers(min_value=0, max_value=0xFFFF)
statuses = us.map(Status)
priorities = st.sampled_from(list(Priority))


@st.composite
def uids(draw: st.DrawFn) -> str:
    """Syntactically valid UIDs: dot-separated numbers without leading zeros, <= 64 chars."""
    parts = draw(
        st.lists(st.integers(min_value=0, max_value=10**12).map(str), min_size=2, max_size=12)
    )
    uid = ".".join(parts)
    return uid[:64].rstrip(".")


_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")
ae_titles = st.text(alphabet=_printable, min_size=1, max_size=16).map(str.strip).filter(bool)
"""AE titles as held in messages: 1-16 printable characters, no padding."""

error_comments = st.text(alphabet=_printable, min_size=1, max_size=64).map(str.strip).filter(bool)
tags = st.integers(min_value=0, max_value=0xFFFFFFFF)
tag_lists = st.lists(tags, min_size=1, max_size=8).map(tuple)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _response(cls: type[Any], **extra: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        cls,
        message_id_being_responded_to=us,
        status=statuses,
        affected_sop_class_uid=_opt(uids()),
        error_comment=_opt(error_comments),
        error_id=_opt(us),
        offending_element=_opt(tag_lists),
        has_dataset=st.booleans(),
        **extra,
    )


_SUBOPS = {
    "number_of_remaining_suboperations": _opt(us),
    "number_of_completed_suboperations": _opt(us),
    "number_of_failed_suboperations": _opt(us),
    "number_of_warning_suboperations": _opt(us),
}

MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    CEchoRQ: st.builds(
        CEchoRQ, message_id=us, affected_sop_class_uid=uids(), has_dataset=st.booleans()
    ),
    CEchoRSP: _response(CEchoRSP),
    CStoreRQ: st.builds(
        CStoreRQ,
        message_id=us,
        affected_sop_class_uid=uids(),
        affected_sop_instance_uid=uids(),
        priority=priorities,
        move_originator_ae_title=_opt(ae_titles),
        move_originator_message_id=_opt(us),
        has_dataset=st.booleans(),
    ),
    CStoreRSP: _response(CStoreRSP, affected_sop_instance_uid=_opt(uids())),
    CFindRQ: st.builds(
        CFindRQ,
        message_id=us,
        affected_sop_class_uid=uids(),
        priority=priorities,
        has_dataset=st.booleans(),
    ),
    CFindRSP: _response(CFindRSP),
    CGetRQ: st.builds(
        CGetRQ,
        message_id=us,
        affected_sop_class_uid=uids(),
        priority=priorities,
        has_dataset=st.booleans(),
    ),
    CGetRSP: _response(CGetRSP, **_SUBOPS),
    CMoveRQ: st.builds(
        CMoveRQ,
        message_id=us,
        affected_sop_class_uid=uids(),
        move_destination=ae_titles,
        priority=priorities,
        has_dataset=st.booleans(),
    ),
    CMoveRSP: _response(CMoveRSP, **_SUBOPS),
    CCancelRQ: st.builds(CCancelRQ, message_id_being_responded_to=us, has_dataset=st.booleans()),
    NEventReportRQ: st.builds(
        NEventReportRQ,
        message_id=us,
        affected_sop_class_uid=uids(),
        affected_sop_instance_uid=uids(),
        event_type_id=us,
        has_dataset=st.booleans(),
    ),
    NEventReportRSP: _response(
        NEventReportRSP, affected_sop_instance_uid=_opt(uids()), event_type_id=_opt(us)
    ),
    NGetRQ: st.builds(
        NGetRQ,
        message_id=us,
        requested_sop_class_uid=uids(),
        requested_sop_instance_uid=uids(),
        attribute_identifier_list=_opt(tag_lists),
        has_dataset=st.booleans(),
    ),
    NGetRSP: _response(
        NGetRSP,
        affected_sop_instance_uid=_opt(uids()),
        attribute_identifier_list=_opt(tag_lists),
    ),
    NSetRQ: st.builds(
        NSetRQ,
        message_id=us,
        requested_sop_class_uid=uids(),
        requested_sop_instance_uid=uids(),
        has_dataset=st.booleans(),
    ),
    NSetRSP: _response(
        NSetRSP,
        affected_sop_instance_uid=_opt(uids()),
        attribute_identifier_list=_opt(tag_lists),
    ),
    NActionRQ: st.builds(
        NActionRQ,
        message_id=us,
        requested_sop_class_uid=uids(),
        requested_sop_instance_uid=uids(),
        action_type_id=us,
        has_dataset=st.booleans(),
    ),
    NActionRSP: _response(
        NActionRSP, affected_sop_instance_uid=_opt(uids()), action_type_id=_opt(us)
    ),
    NCreateRQ: st.builds(
        NCreateRQ,
        message_id=us,
        affected_sop_class_uid=uids(),
        affected_sop_instance_uid=_opt(uids()),
        has_dataset=st.booleans(),
    ),
    NCreateRSP: _response(NCreateRSP, affected_sop_instance_uid=_opt(uids())),
    NDeleteRQ: st.builds(
        NDeleteRQ,
        message_id=us,
        requested_sop_class_uid=uids(),
        requested_sop_instance_uid=uids(),
        has_dataset=st.booleans(),
    ),
    NDeleteRSP: _response(NDeleteRSP, affected_sop_instance_uid=_opt(uids())),
}
"""One strategy per message class, covering every field."""


def messages() -> st.SearchStrategy[Message]:
    """Any DIMSE message."""
    return st.one_of(*MESSAGE_STRATEGIES.values())


@st.composite
def dataset_chunks(draw: st.DrawFn, max_size: int = 4000) -> tuple[bytes, list[bytes]]:
    """An even-length data set and a split of it into chunks of any sizes (some empty)."""
    half = draw(st.integers(min_value=0, max_value=max_size // 2))
    data = draw(st.binary(min_size=2 * half, max_size=2 * half))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
