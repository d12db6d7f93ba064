"""DIMSE messages to and from P-DATA-TF PDVs (PS3.8 Annex E), without copying data sets.

Sending: a message is its command set, then (if CommandDataSetType is not 0101H) its data
set, each cut into fragments; every fragment travels in its own PDV and every PDV in its own
P-DATA-TF PDU, so the data set always starts a new PDU (some peers fail otherwise,
fo-dicom #1960). A PDU is produced as a list of buffers, the 12 header bytes first and then
memoryviews over the caller's data, ready for ``transport.writelines``: the data set is
never copied or joined. PS3.8 Annex E.1 requires every fragment to hold an even number of
bytes, so fragments are ``max_pdu_length - 6`` rounded down to even; a fragment may span
two caller chunks (two views). A data set given as an iterator of chunks is read with one
chunk of look-ahead, the least that tells whether a fragment is the last.

Receiving: `MessageAssembler` turns PDVs into events: the decoded command once its last
fragment arrives (command fragments are small and are joined, up to a limit), then each
data-set PDV as the memoryview it arrived in, never joined. PS3.8 Annex E.1 forbids
interleaving fragments of different messages ("no fragments of any other message shall be
sent until all fragments of the current message have been sent"), so at most one message
is in reception at a time and anything else is a `DimseError`. After a `DimseError` the
stream is unusable: the association must be aborted.
"""

from __future__ import annotations

import itertools
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse.commands import MAX_COMMAND_SET_LENGTH
from aiodicom.core.dimse.messages import Message, decode_message, encode_message, message_name
from aiodicom.core.pdu import PDataTF, PresentationDataValue
from aiodicom.errors import DimseError

__all__ = [
    "UNLIMITED_FRAGMENT_LENGTH",
    "CommandReceived",
    "DatasetFragment",
    "DimseEvent",
    "MessageAssembler",
    "encode_message_pdus",
    "fragment_command",
    "fragment_dataset",
    "fragment_length",
]

UNLIMITED_FRAGMENT_LENGTH = 1 << 20
"""Fragment size used when the peer sets no maximum (max PDU length 0): 1 MiB keeps the
per-PDU overhead negligible without asking the peer to take one huge PDU."""

# P-DATA-TF header (type, reserved, PDU length) + PDV item header (item length, context
# ID, message control header): PS3.8 §9.3.5, Tables 9-22 and 9-23.
_HEADERS = struct.Struct(">BxLLBB")
_PDU_OVERHEAD = 6  # PDV item-length (4) + context ID (1) + message control header (1)
_MAX_FRAGMENT = (0xFFFFFFFF - _PDU_OVERHEAD) & ~1
_COMMAND = 0x01
_LAST = 0x02


def fragment_length(max_pdu_length: int) -> int:
    """The largest even fragment that fits a P-DATA-TF of ``max_pdu_length`` (0 = no limit).

    Raises `DimseError` for a limit under 8 bytes, which cannot carry an even fragment.
    """
    if max_pdu_length == 0:
        return UNLIMITED_FRAGMENT_LENGTH
    if max_pdu_length < _PDU_OVERHEAD + 2:
        raise DimseError(
            f"a maximum PDU length of {max_pdu_length} cannot carry a fragment: "
            "it must be 0 (no limit) or at least 8"
        )
    return min((max_pdu_length - _PDU_OVERHEAD) & ~1, _MAX_FRAGMENT)


def _view(data: ReadableBuffer) -> memoryview:
    view = data if isinstance(data, memoryview) else memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _pdu(
    context_id: int, control: int, parts: list[memoryview], length: int
) -> list[ReadableBuffer]:
    header = _HEADERS.pack(0x04, length + _PDU_OVERHEAD, length + 2, context_id, control)
    pdu: list[ReadableBuffer] = [header]
    pdu.extend(parts)
    return pdu


def _fragments(
    chunks: Iterable[ReadableBuffer], size: int
) -> Iterator[tuple[list[memoryview], int, bool]]:
    """Cut a stream of chunks into (views, length, is_last) fragments of ``size`` bytes.

    Reads one chunk ahead so the last fragment is known; an empty stream gives one empty
    last fragment.
    """
    pending: deque[memoryview] = deque()
    have = 0
    source = iter(chunks)
    exhausted = False
    while True:
        while not exhausted and have <= size:
            chunk = next(source, None)
            if chunk is None:
                exhausted = True
            else:
                view = _view(chunk)
                if view:
                    pending.append(view)
                    have += len(view)
        is_last = exhausted and have <= size
        length = have if is_last else size
        parts: list[memoryview] = []
        need = length
        while need:
            head = pending[0]
            if len(head) <= need:
                parts.append(pending.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                pending[0] = head[need:]
                need = 0
        have -= length
        yield parts, length, is_last
        if is_last:
            return


def fragment_command(
    context_id: int, command: ReadableBuffer, max_pdu_length: int
) -> list[list[ReadableBuffer]]:
    """The P-DATA-TF PDUs carrying an encoded command set, one PDV each (PS3.8 Annex E)."""
    size = fragment_length(max_pdu_length)
    pdus: list[list[ReadableBuffer]] = []
    for parts, length, is_last in _fragments((command,), size):
        control = _COMMAND | (_LAST if is_last else 0)
        pdus.append(_pdu(context_id, control, parts, length))
    return pdus


def fragment_dataset(
    context_id: int,
    dataset: ReadableBuffer | Iterable[ReadableBuffer],
    max_pdu_length: int,
) -> Iterator[list[ReadableBuffer]]:
    """Yield the P-DATA-TF PDUs carrying a data set, one PDV each, without copying it.

    ``dataset`` is one buffer or an iterable of chunks of any sizes (e.g. a file read
    piecewise). Each PDU is ``[header, view, ...]`` with views over the caller's buffers,
    which must stay unchanged until written. Raises `DimseError` if the data set has an
    odd length (PS3.5 §7.1: data sets have even length; PS3.8 Annex E.1: fragments too):
    for a single buffer before the first PDU, for chunks when the end is reached.
    """
    size = fragment_length(max_pdu_length)
    if isinstance(dataset, bytes | bytearray | memoryview):
        whole = _view(dataset)
        if len(whole) % 2:
            raise DimseError(f"data set of odd length {len(whole)}; DICOM data sets are even")
        return _dataset_pdus(context_id, (whole,), size)
    return _dataset_pdus(context_id, dataset, size)


def _dataset_pdus(
    context_id: int, chunks: Iterable[ReadableBuffer], size: int
) -> Iterator[list[ReadableBuffer]]:
    for parts, length, is_last in _fragments(chunks, size):
        if is_last and length % 2:
            raise DimseError("data set of odd length; DICOM data sets have even length")
        yield _pdu(context_id, _LAST if is_last else 0, parts, length)


def encode_message_pdus(
    context_id: int,
    message: Message,
    dataset: ReadableBuffer | Iterable[ReadableBuffer] | None,
    max_pdu_length: int,
) -> Iterator[list[ReadableBuffer]]:
    """All P-DATA-TF PDUs of one message: the command set, then the data set if any.

    Raises `DimseError` at once if ``dataset`` disagrees with ``message.has_dataset``.
    """
    if message.has_dataset and dataset is None:
        raise DimseError(f"{message_name(message)} announces a data set but none was given")
    if not message.has_dataset and dataset is not None:
        raise DimseError(
            f"{message_name(message)} has has_dataset=False but a data set was given"
        )
    command = fragment_command(context_id, encode_message(message), max_pdu_length)
    if dataset is None:
        return iter(command)
    return itertools.chain(command, fragment_dataset(context_id, dataset, max_pdu_length))


# -- receiving -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceived:
    """A complete command set arrived and decoded; its data set (if any) follows."""

    context_id: int
    message: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetFragment:
    """One data-set PDV, as the memoryview it arrived in (never joined or copied)."""

    context_id: int
    data: memoryview
    is_last: bool


DimseEvent = CommandReceived | DatasetFragment

# The two events built without their frozen ``__init__`` (a keyword call and one
# ``object.__setattr__`` per field cost about three times this): same class and fields.
_new_object = object.__new__
_set_command_context = CommandReceived.__dict__["context_id"].__set__
_set_command_message = CommandReceived.__dict__["message"].__set__
_set_fragment_context = DatasetFragment.__dict__["context_id"].__set__
_set_fragment_data = DatasetFragment.__dict__["data"].__set__
_set_fragment_last = DatasetFragment.__dict__["is_last"].__set__


def _command_received(context_id: int, message: Message) -> CommandReceived:
    event: CommandReceived = _new_object(CommandReceived)
    _set_command_context(event, context_id)
    _set_command_message(event, message)
    return event


def _dataset_fragment(context_id: int, data: memoryview, is_last: bool) -> DatasetFragment:
    event: DatasetFragment = _new_object(DatasetFragment)
    _set_fragment_context(event, context_id)
    _set_fragment_data(event, data)
    _set_fragment_last(event, is_last)
    return event


class MessageAssembler:
    """Sans-I/O reassembly of DIMSE messages from received P-DATA-TF PDUs (PS3.8 Annex E).

    Feed every P-DATA-TF in order; get `CommandReceived` and `DatasetFragment` events.
    Raises `DimseError` on a protocol fault: data-set fragments with no data set expected,
    on another presentation context, or before the command ended; a command while a data
    set is incomplete; a command set over ``max_command_length``; a malformed command set.
    """

    __slots__ = ("_command", "_command_context", "_dataset_context", "_limit")

    def __init__(self, *, max_command_length: int = MAX_COMMAND_SET_LENGTH) -> None:
        self._limit = max_command_length
        self._command = bytearray()
        """The pending command fragments' bytes, copied: a fragment costs its length, and
        nothing it came in (an empty one nothing at all; they would pile up as views)."""
        self._command_context: int | None = None
        self._dataset_context: int | None = None

    @property
    def idle(self) -> bool:
        """True between messages: no partial command and no data set outstanding."""
        return self._command_context is None and self._dataset_context is None

    @property
    def expecting_dataset(self) -> bool:
        """True after a command with a data set, until its last fragment."""
        return self._dataset_context is not None

    def feed(self, pdata: PDataTF) -> list[DimseEvent]:
        """Process one P-DATA-TF; returns the events it completes, in order.

        A P-DATA-TF of one PDV (what every sender we know sends) skips the loop, and one
        holding a whole command (the usual C-ECHO-RQ, C-STORE-RQ) takes a shorter way with
        the same checks, state and events; anything else goes PDV by PDV (`feed_pdv`).
        """
        pdvs = pdata.pdvs
        if len(pdvs) == 1:
            pdv = pdvs[0]
            if not pdv.is_command:
                context_id = pdv.context_id
                if self._command_context is None and self._dataset_context == context_id:
                    # the fragment expected: `_dataset_fragment`'s checks all pass
                    data = pdv.data
                    if type(data) is not memoryview or data.format != "B" or data.ndim != 1:
                        data = _view(data)
                    is_last = pdv.is_last
                    if is_last:
                        self._dataset_context = None
                    return [_dataset_fragment(context_id, data, is_last)]
                return [self._dataset_fragment(pdv)]
            if pdv.is_last and self._command_context is None and self._dataset_context is None:
                data = pdv.data
                if type(data) is not memoryview or data.format != "B" or data.ndim != 1:
                    data = _view(data)
                if len(data) <= self._limit:
                    # decode first: if it raises, the state is as `_command_fragment`
                    # leaves it (nothing pending)
                    message = decode_message(data)
                    if message.has_dataset:
                        self._dataset_context = pdv.context_id
                    return [_command_received(pdv.context_id, message)]
        events: list[DimseEvent] = []
        for pdv in pdvs:
            event = self.feed_pdv(pdv)
            if event is not None:
                events.append(event)
        return events

    def feed_pdv(self, pdv: PresentationDataValue) -> DimseEvent | None:
        """Process one PDV; returns the event it completes, if any."""
        if pdv.is_command:
            return self._command_fragment(pdv)
        return self._dataset_fragment(pdv)

    def _command_fragment(self, pdv: PresentationDataValue) -> CommandReceived | None:
        if self._dataset_context is not None:
            raise DimseError(
                "a command fragment arrived while the data set of the previous message is "
                "incomplete (PS3.8 Annex E.1 forbids interleaving messages)"
            )
        if self._command_context is None:
            self._command_context = pdv.context_id
        elif pdv.context_id != self._command_context:
            raise DimseError(
                f"command fragment on presentation context {pdv.context_id} while a command "
                f"on context {self._command_context} is incomplete (PS3.8 Annex E.1)"
            )
        view = _view(pdv.data)
        if len(self._command) + len(view) > self._limit:
            raise DimseError(
                f"command set longer than our limit of {self._limit} bytes; refusing it"
            )
        if not pdv.is_last:
            self._command += view
            return None
        data: ReadableBuffer = view
        command = self._command
        if command:
            command += view
            data = command
            self._command = bytearray()
        context_id = self._command_context
        self._command_context = None
        message = decode_message(data)
        if message.has_dataset:
            self._dataset_context = context_id
        return _command_received(context_id, message)

    def _dataset_fragment(self, pdv: PresentationDataValue) -> DatasetFragment:
        if self._command_context is not None:
            raise DimseError("a data-set fragment arrived before the last command fragment")
        if self._dataset_context is None:
            raise DimseError(
                "a data-set fragment arrived but no data set is expected: no command "
                "preceded it, or the command's CommandDataSetType is 0101H (no data set)"
            )
        if pdv.context_id != self._dataset_context:
            raise DimseError(
                f"data-set fragment on presentation context {pdv.context_id}, but the "
                f"message's command came on context {self._dataset_context} (PS3.8 Annex E.1)"
            )
        if pdv.is_last:
            self._dataset_context = None
        return _dataset_fragment(pdv.context_id, _view(pdv.data), pdv.is_last)
