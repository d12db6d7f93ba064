"""Write the seed corpora of fuzz/corpus/<harness>/ from our own encoders and tests/vectors.

Seeds: every PDU type, every item and user-information sub-item, a command set for every
DIMSE message type, fragment streams, and whole conversations for the upper layer. Each
seed is named after what it holds; rerunning rewrites the same files (deterministic).
Usage: ``python fuzz/make_corpus.py`` (from the repository root or anywhere).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import fuzz_dimse
import fuzz_reader
import fuzz_upper_layer as ful

from aiodicom.core.dimse import (
    COMMAND_ELEMENTS,
    FIELD_TAGS,
    MESSAGE_TYPES,
    VR,
    CEchoRQ,
    CStoreRQ,
    Message,
    encode_message,
    fragment_command,
    fragment_dataset,
    message_name,
)
from aiodicom.core.items import PresentationContextAC, PresentationResult
from aiodicom.core.negotiation import (
    AcceptorPolicy,
    build_request,
    negotiate_as_acceptor,
)
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    encode_pdu,
)
from aiodicom.core.user_items import (
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserIdentityType,
    UserInformation,
)

FUZZ = Path(__file__).resolve().parent
VECTORS = FUZZ.parent / "tests" / "vectors"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


def build_full_request() -> AAssociateRQ:
    return build_request(
        called_ae="STORE-SCP",
        calling_ae="ECHO-SCU",
        contexts=[
            ("1.2.840.10008.1.1", [IMPLICIT]),
            (CT, [EXPLICIT, IMPLICIT, "1.2.840.10008.1.2.4.50"]),
        ],
        async_ops=(3, 2),
        role_selections=[RoleSelection(sop_class_uid=CT, scu_role=True, scp_role=True)],
        extended_negotiations=[
            SOPClassExtendedNegotiation(sop_class_uid=CT, application_information=b"\x01\x00")
        ],
        common_extended_negotiations=[
            SOPClassCommonExtendedNegotiation(
                sop_class_uid=CT,
                service_class_uid="1.2.840.10008.4.2",
                related_general_sop_classes=("1.2.840.10008.5.1.4.1.1.2.1",),
            )
        ],
        user_identity=UserIdentityRQ(
            identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
            positive_response_requested=True,
            primary_field=b"alice",
            secondary_field=b"secret",
        ),
    )


def pdu_seeds() -> dict[str, bytes]:
    """One encoded PDU per type and per item/sub-item family."""
    rq_min = build_request(
        called_ae="A", calling_ae="B", contexts=[("1.2.840.10008.1.1", [IMPLICIT])]
    )
    rq_full = build_full_request()
    policy = AcceptorPolicy(
        accept_any_abstract_syntax=True,
        extended_negotiation={CT: b"\x01\x00"},
    )
    ac = negotiate_as_acceptor(rq_full, policy, identity_response=b"token")
    assert isinstance(ac, AAssociateAC)
    ac_all_results = AAssociateAC(
        called_ae_title="STORE-SCP",
        calling_ae_title="ECHO-SCU",
        presentation_contexts=tuple(
            PresentationContextAC(
                context_id=2 * i + 1,
                result=result,
                transfer_syntax=IMPLICIT if result is PresentationResult.ACCEPTANCE else None,
            )
            for i, result in enumerate(PresentationResult)
        ),
        user_information=UserInformation(
            maximum_length=0,
            implementation_class_uid="1.2.3",
            user_identity_ac=UserIdentityAC(server_response=b""),
        ),
    )
    cmd = encode_message(CEchoRQ(message_id=1))
    pdata = PDataTF(
        pdvs=(
            PresentationDataValue(context_id=1, is_command=True, is_last=False, data=cmd[:10]),
            PresentationDataValue(context_id=1, is_command=True, is_last=True, data=cmd[10:]),
            PresentationDataValue(context_id=3, is_command=False, is_last=True, data=b"\0" * 8),
        )
    )
    pdus: dict[str, PDU] = {
        "associate_rq_min": rq_min,
        "associate_rq_all_subitems": rq_full,
        "associate_ac_negotiated": ac,
        "associate_ac_all_results": ac_all_results,
        "associate_rj": AAssociateRJ(result=1, source=1, reason=7),
        "pdata_three_pdvs": pdata,
        "pdata_empty_value": PDataTF(
            pdvs=(PresentationDataValue(context_id=255, is_command=False, is_last=False, data=b""),)
        ),
        "release_rq": AReleaseRQ(),
        "release_rp": AReleaseRP(),
        "abort_user": AAbort(source=0, reason=0),
        "abort_provider": AAbort(source=2, reason=6),
    }
    return {name: encode_pdu(pdu) for name, pdu in pdus.items()}


def _value(name: str, vr: VR) -> object:
    if vr is VR.UI:
        return "1.2.840.10008.5.1.4.1.1.2" if "class" in name else "1.2.826.0.1.3680043.2.1.7"
    if vr is VR.AE:
        return "MOVE-SCP"
    if vr is VR.LO:
        return "disk full"
    if vr is VR.AT:
        return (0x00100010, 0x00080018)
    return 0x0110 if name == "status" else 1


def every_message() -> list[Message]:
    """One message per DIMSE type with every field set, and one with only what is required."""
    out: list[Message] = []
    for cls in MESSAGE_TYPES.values():
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "has_dataset"]
        full = {f: _value(f, COMMAND_ELEMENTS[FIELD_TAGS[f]][1]) for f in fields}
        required = {f: v for f, v in full.items() if f in cls._REQUIRED}
        out.append(cls(**full))  # type: ignore[arg-type]
        out.append(cls(**required))  # type: ignore[arg-type]
    return out


def dimse_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for i, msg in enumerate(every_message()):
        cmd = encode_message(msg)
        label = f"{message_name(msg).lower()}_{i % 2 and 'required' or 'full'}"
        seeds[f"command_{label}"] = fuzz_dimse.make_input(fuzz_dimse.MODE_COMMAND, cmd)
        if i % 2 == 0:
            seeds[f"fragments_{label}"] = fuzz_dimse.make_input(
                fuzz_dimse.MODE_FRAGMENTS, cmd, sizes=(13, 1, 64)
            )
    store = encode_message(
        CStoreRQ(message_id=5, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4")
    )
    dataset = bytes(range(256)) * 2
    pdvs = [(1, True, False, store[:30]), (1, True, True, store[30:])]
    pdvs += [(1, False, False, dataset[:100]), (1, False, False, dataset[100:300])]
    pdvs += [(1, False, True, dataset[300:])]
    seeds["stream_store_fragmented"] = fuzz_dimse.make_input(
        fuzz_dimse.MODE_STREAM, fuzz_dimse.script(pdvs)
    )
    seeds["stream_store_one_pdu"] = fuzz_dimse.make_input(
        fuzz_dimse.MODE_STREAM, fuzz_dimse.script(pdvs, pdu_per_pdv=False)
    )
    echo = encode_message(CEchoRQ(message_id=2))
    seeds["stream_two_echoes_two_contexts"] = fuzz_dimse.make_input(
        fuzz_dimse.MODE_STREAM, fuzz_dimse.script([(3, True, True, echo), (5, True, True, echo)])
    )
    return seeds


def _pdata_pdus(context_id: int, message: Message, dataset: bytes | None, max_pdu: int) -> bytes:
    parts = fragment_command(context_id, encode_message(message), max_pdu)
    if dataset is not None:
        parts += list(fragment_dataset(context_id, dataset, max_pdu))
    return b"".join(bytes(b) for pdu in parts for b in pdu)


def stream_seeds(pdus: dict[str, bytes]) -> dict[str, bytes]:
    """PDU streams: a whole store conversation, every PDU type, an over-long length."""
    store = CStoreRQ(
        message_id=9, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4.5"
    )
    conversation = ful.VALID_RQ + _pdata_pdus(3, store, bytes(2000), 512) + pdus["release_rq"]
    everything = b"".join(pdus.values())
    too_long = b"\x04\x00\x00\x01\x00\x00" + bytes(16)
    return {"conversation": conversation, "every_pdu": everything, "too_long": too_long}


def reader_seeds(pdus: dict[str, bytes]) -> dict[str, bytes]:
    streams = stream_seeds(pdus)
    mk = fuzz_reader.make_input
    return {
        "conversation_whole": mk(streams["conversation"]),
        "conversation_bytewise_buffered": mk(
            streams["conversation"], sizes=[1], buffered_path=True
        ),
        "conversation_small_staging": mk(streams["conversation"], staging=6, sizes=[7, 300, 5]),
        "every_pdu_split": mk(streams["every_pdu"], max_body=600, sizes=[3, 64]),
        "too_long_refused": mk(streams["too_long"], max_body=1000, sizes=[2]),
        "big_body_grows": mk(b"\x04\x00\x00\x00\x80\x00" + bytes(0x8000), staging=16, sizes=[4000]),
    }


def upper_layer_seeds(pdus: dict[str, bytes]) -> dict[str, bytes]:
    echo = _pdata_pdus(1, CEchoRQ(message_id=1), None, 16384)
    store = CStoreRQ(
        message_id=9, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4.5"
    )
    stored = _pdata_pdus(3, store, bytes(3000), 1024)
    mk = ful.make_input
    p = ful.PREPEND_RQ
    return {
        "echo_release": mk(echo + pdus["release_rq"], flags=p),
        "echo_release_split": mk(
            echo + pdus["release_rq"], flags=p | ful.BUFFERED, sizes=[5, 1, 90]
        ),
        "store_release": mk(stored + pdus["release_rq"], flags=p, sizes=[700]),
        "rq_in_stream": mk(ful.VALID_RQ + echo + pdus["abort_user"], sizes=[len(ful.VALID_RQ)]),
        "rq_then_data_too_early": mk(ful.VALID_RQ + echo, sizes=[100]),
        "reject": mk(echo, flags=p | ful.REJECT),
        "strict_policy_rejects": mk(pdus["associate_rq_all_subitems"], flags=ful.STRICT_POLICY),
        "release_collision": mk(pdus["release_rq"] + pdus["release_rp"], flags=p | ful.RELEASE),
        "local_abort": mk(echo + echo, flags=p | ful.ABORT),
        "artim_expires": mk(b"", flags=ful.EXPIRE, steps=[31]),
        "unexpected_ac": mk(pdus["associate_ac_negotiated"], flags=p),
        "garbage_pdu_type": mk(b"\x09\x00\x00\x00\x00\x02\x00\x00", flags=p),
        "over_limit": mk(b"\x04\x00\x00\x01\x00\x00", flags=p, max_pdu=1024),
    }


def vector_seeds() -> dict[str, bytes]:
    """tests/vectors/*.bin (annotated PDU vectors) as they are."""
    if not VECTORS.is_dir():
        return {}
    return {f"vector_{path.stem}": path.read_bytes() for path in sorted(VECTORS.glob("*.bin"))}


def store_seeds() -> dict[str, bytes]:
    """Data sets as a peer sends them, in each transfer syntax, whole and cut in pieces."""
    import zlib

    import fuzz_store
    from pydicom.dataset import Dataset
    from pydicom.filewriter import write_dataset

    def dataset(study: str) -> Dataset:
        ds = Dataset()
        ds.SOPClassUID = fuzz_store.SOP_CLASS
        ds.SOPInstanceUID = fuzz_store.SOP_INSTANCE
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = "1.2.3.4.5.6"
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "PID-1"
        ds.Modality = "CT"
        ds.InstanceNumber = 1
        ds.BitsAllocated = 16
        ds.PixelData = bytes(64)
        return ds

    def encode(ds: Dataset, implicit: bool, little: bool) -> bytes:
        from pydicom.filebase import DicomBytesIO

        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = implicit, little
        write_dataset(fp, ds)
        return fp.getvalue()

    seeds: dict[str, bytes] = {}
    for study in ("1.2.3.4", "../../etc"):
        good = study == "1.2.3.4"
        tag = "ok" if good else "traversal"
        explicit = encode(dataset(study), False, True)
        implicit = encode(dataset(study), True, True)
        seeds[f"store_{tag}_implicit"] = fuzz_store.make_input(implicit, 0)
        seeds[f"store_{tag}_explicit"] = fuzz_store.make_input(explicit, 1)
        seeds[f"store_{tag}_explicit_pieces"] = fuzz_store.make_input(explicit, 1, (7, 64, 1))
        seeds[f"store_{tag}_big"] = fuzz_store.make_input(encode(dataset(study), False, False), 2)
        deflater = zlib.compressobj(wbits=-15)
        deflated = deflater.compress(explicit) + deflater.flush()
        seeds[f"store_{tag}_deflated"] = fuzz_store.make_input(deflated, 3)
    return seeds


def write(harness: str, seeds: dict[str, bytes]) -> None:
    folder = FUZZ / "corpus" / harness
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (folder / f"{name}.bin").write_bytes(data)
    print(f"{harness}: {len(seeds)} seeds in {folder.relative_to(FUZZ.parent)}")


def main() -> None:
    pdus = pdu_seeds()
    vectors = vector_seeds()
    write("fuzz_pdu", {**pdus, **vectors})
    write("fuzz_reader", reader_seeds(pdus))
    write("fuzz_upper_layer", upper_layer_seeds(pdus))
    write("fuzz_dimse", dimse_seeds())
    write("fuzz_store", store_seeds())


if __name__ == "__main__":
    main()
