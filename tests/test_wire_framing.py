"""Framing: the msgpack and json encoders and incremental decoders."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aemp._errors import AempError, MessageError, RemoteProtocolError
from aemp.wire import (
    JsonDecoder,
    JsonEncoder,
    MsgpackDecoder,
    MsgpackEncoder,
    choose_framing,
    make_decoder,
    make_encoder,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVERY_SPLIT = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == True does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


# -- encoding ------------------------------------------------------------------


def test_msgpack_encoding_is_plain_msgpack_with_bin_type() -> None:
    data = MsgpackEncoder().encode(["port", "ping", 1, b"\x00\xff", None, True, 1.5])
    assert data == msgpack.packb(
        ["port", "ping", 1, b"\x00\xff", None, True, 1.5], use_bin_type=True
    )
    assert data[:1] == b"\x97" and b"\xc4\x02\x00\xff" in data  # fixarray, bin 8


def test_json_encoding_is_compact_utf8() -> None:
    data = JsonEncoder().encode(["p", "ä€", {"k": [1, 2.5, None, False]}])
    assert data == '["p","ä€",{"k":[1,2.5,null,false]}]'.encode()


def test_tuples_and_empty_packets_are_fine() -> None:
    for framing in ("msgpack", "json"):
        enc, dec = make_encoder(framing), make_decoder(framing)
        assert dec.feed(enc.encode(("port", ("a", 1))) + enc.encode([])) == [["port", ["a", 1]], []]


class Thing:
    def __repr__(self) -> str:
        return "<Thing>"


BAD_FOR_BOTH = [
    (["p", Thing()], "<Thing>"),
    (["p", 2**64], str(2**64)),
    (["p", -(2**63) - 1], str(-(2**63) - 1)),
    (["p", {1: "x"}], "dict key of type int"),
    (["p", [{"ok": {(1, 2): 3}}]], "dict key of type tuple"),
    (["p", {"k": [Thing()]}], "<Thing>"),
    (["p", {1, 2}], "set"),
    (["p", "\ud800"], "surrogate"),
    ({"p": 1}, "must be a list"),
    ("port", "must be a list"),
    ([1, "x"], "must start with the port name"),
    ([None], "must start with the port name"),
    (["p", msgpack.ExtType(1, b"x")], "ExtType"),
    (["p", msgpack.Timestamp(1, 0)], "Timestamp"),
]
BAD_FOR_JSON = [
    (["p", b"bytes"], "binary data"),
    (["p", {"k": bytearray(b"x")}], "binary data"),
    (["p", float("nan")], "nan"),
    (["p", [float("inf")]], "inf"),
]


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return ["p", value]


@pytest.mark.parametrize("framing", ["msgpack", "json"])
@pytest.mark.parametrize(("packet", "named"), [*BAD_FOR_BOTH, (_nested(600), "nested")])
def test_unsendable_values_raise_message_error_naming_them(
    framing: str, packet: Any, named: str
) -> None:
    enc = make_encoder(framing)
    with pytest.raises(MessageError, match=None) as info:
        enc.encode(packet)
    assert named.lower() in str(info.value).lower()
    assert isinstance(info.value, (AempError, TypeError))
    # the encoder is still usable and produces exactly the right bytes
    good = enc.encode(["port", "ok", 1])
    assert make_decoder(framing).feed(good) == [["port", "ok", 1]]


@pytest.mark.parametrize("framing", ["msgpack", "json"])
@pytest.mark.parametrize(
    ("packet", "named"),
    [(p, n) for p, n in [*BAD_FOR_BOTH, (_nested(600), "nested")] if isinstance(p, list) and p],
)
def test_encode_and_append_message_check_as_encode_does(
    framing: str, packet: Any, named: str
) -> None:
    enc = make_encoder(framing)
    if not isinstance(packet[0], str):
        return  # encode_message takes the port name as a str
    with pytest.raises(MessageError) as info:
        enc.encode_message(packet[0], tuple(packet[1:]))
    assert named.lower() in str(info.value).lower()
    with pytest.raises(MessageError) as info:
        enc.append_message(packet[0], tuple(packet[1:]))
    assert named.lower() in str(info.value).lower()
    assert enc.out == []  # nothing appended for a bad message
    msg = ("ping", 1, -(2**63), 2**64 - 1, 1.5, None, True, "x" * 40, [1, {"k": []}])
    assert enc.encode_message("port", msg) == enc.encode(["port", *msg])
    enc.out = out = [b"before"]
    enc.append_message("port", msg)
    enc.append_message("port", msg[:3])
    assert out == [b"before", enc.encode(["port", *msg]), enc.encode(["port", *msg[:3]])]
    small = make_encoder(framing, max_packet=100)
    with pytest.raises(MessageError, match="exceeds max_packet"):
        small.encode_message("p", ("x" * 200,))
    with pytest.raises(MessageError, match="exceeds max_packet"):
        small.append_message("p", ("x" * 200,))
    assert small.out == []


@pytest.mark.parametrize(("packet", "named"), BAD_FOR_JSON)
def test_json_refuses_what_json_cannot_carry(packet: Any, named: str) -> None:
    with pytest.raises(MessageError) as info:
        JsonEncoder().encode(packet)
    assert named in str(info.value).lower()
    MsgpackEncoder().encode(packet)  # but msgpack can


def test_int_limits_are_the_64_bit_range() -> None:
    for framing in ("msgpack", "json"):
        enc, dec = make_encoder(framing), make_decoder(framing)
        packet = ["p", 2**64 - 1, -(2**63)]
        assert dec.feed(enc.encode(packet)) == [packet]


def test_encoding_over_max_packet_is_refused() -> None:
    for framing in ("msgpack", "json"):
        enc = make_encoder(framing, max_packet=100)
        enc.encode(["p", "x" * 50])
        with pytest.raises(MessageError, match="exceeds max_packet"):
            enc.encode(["p", "x" * 200])


def test_choose_framing_takes_the_peers_first_we_speak() -> None:
    assert choose_framing(["cbor", "json", "msgpack"], ["msgpack", "json"]) == "json"
    with pytest.raises(RemoteProtocolError, match="no common framing"):
        choose_framing(["cbor", "storable"], ["msgpack", "json"])


# -- decoding bad input ----------------------------------------------------------

BAD_MSGPACK = [
    (msgpack.packb({"a": 1}), "not an array"),
    (msgpack.packb(5), "not an array"),
    (msgpack.packb("port"), "not an array"),
    (msgpack.packb([1, "x"]), "port name"),
    (msgpack.packb([None]), "port name"),
    (msgpack.packb([b"port", "x"], use_bin_type=True), "port name"),
    (b"\xc1", "invalid msgpack"),
    (b"\x92\xa1p\xc1", "invalid msgpack"),
    (b"\x91\xa2\xff\xfe", "invalid msgpack"),  # invalid UTF-8 in a str
    (msgpack.packb(["p", msgpack.ExtType(3, b"abc")]), "extension type"),
    (msgpack.packb(["p", msgpack.Timestamp(1, 0)]), "extension type"),
    (bytes.fromhex("92a170c70005"), "extension type"),  # ext of length 0
    (msgpack.packb(["p", {(1, 2): 3}]), "invalid msgpack"),  # key not str/bytes
    (b"\x91" * 5000, "invalid msgpack"),  # nested too deep
]
BAD_JSON = [
    (b'{"a":1}', "not a json array"),
    (b"5", "not a json array"),
    (b'"port"', "not a json array"),
    (b"null", "not a json array"),
    (b'[1,"x"]', "port name"),
    (b"[null]", "port name"),
    (b'["a",]', "invalid json"),
    (b'["a" "b"]', "invalid json"),
    (b"[tru]", "invalid json"),
    (b'["a"}', "invalid json"),
    (b'["a",NaN]', "invalid json"),
    (b'["a",Infinity]', "invalid json"),
    (b'["\xff"]', "utf-8"),
    (b'["\xc3\x28"]', "utf-8"),
    (b'["a","\x01"]', "invalid json"),  # raw control character
    (b'["a",' + b"9" * 5000 + b"]", "invalid json"),  # more digits than int() takes
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_MSGPACK)
def test_bad_msgpack_raises_remote_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        MsgpackDecoder().feed(data)
    assert reason in str(info.value).lower()


@pytest.mark.parametrize(("data", "reason"), BAD_JSON)
def test_bad_json_raises_remote_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        JsonDecoder().feed(data)
    assert reason in str(info.value).lower()


@pytest.mark.parametrize(("data", "reason"), BAD_JSON[:-1])
def test_bad_json_is_found_also_when_fed_byte_by_byte(data: bytes, reason: str) -> None:
    decoder = JsonDecoder()
    with pytest.raises(RemoteProtocolError):
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])


def test_incomplete_json_waits_and_is_not_an_error() -> None:
    decoder = JsonDecoder()
    pieces = [b'["a', b"\\", b'"', b"]}", b'"', b",{", b'"x', b'":', b"[1,2", b"]}", b"]"]
    assert b"".join(pieces) == b'["a\\"]}",{"x":[1,2]}]'
    for piece in pieces[:-1]:
        assert decoder.feed(piece) == []
        assert decoder.has_partial()
    assert decoder.feed(pieces[-1]) == [['a"]}', {"x": [1, 2]}]]
    assert not decoder.has_partial()
    decoder = JsonDecoder()
    assert decoder.feed(b'["a\\"]}"') == []  # the bracket is inside the string
    assert decoder.has_partial()
    assert decoder.feed(b"]") == [['a"]}']]


def test_json_tolerates_whitespace_between_packets() -> None:
    data = b' ["a"]\n["b",1] \r\n\t[ "c" , { "k" : [ ] } ]  []\n'
    assert JsonDecoder().feed(data) == [["a"], ["b", 1], ["c", {"k": []}], []]


def test_json_utf8_split_inside_a_character() -> None:
    data = '["ä€😀"]'.encode()
    decoder = JsonDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    assert out == [["ä€😀"]]
    decoder.feed(b'["\xe2\x82')
    assert decoder.has_partial()


def test_perl_booleans_and_undef_pass_through() -> None:
    assert JsonDecoder().feed(b'["c1","1"]["c2",""]["x",null,true]') == [
        ["c1", "1"],
        ["c2", ""],
        ["x", None, True],
    ]


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_max_packet_is_enforced_in_one_chunk_and_in_pieces(framing: str) -> None:
    limit = 1000
    enc = make_encoder(framing)
    fits = enc.encode(["p", "x" * 500])
    exact = enc.encode(["p", "x" * (500 + limit - len(fits))])
    assert len(exact) == limit
    big = enc.encode(["p", "x" * 5000])
    # a packet of exactly max_packet is fine, alone and among others
    assert len(make_decoder(framing, limit).feed(fits + exact + fits)) == 3
    decoder = make_decoder(framing, limit)
    assert [len(decoder.feed(exact[i : i + 7])) for i in range(0, limit, 7)].count(1) == 1
    with pytest.raises(RemoteProtocolError, match="max_packet"):
        make_decoder(framing, limit).feed(fits + big)
    decoder = make_decoder(framing, limit)
    with pytest.raises(RemoteProtocolError, match="max_packet"):
        for i in range(0, len(big), 100):
            decoder.feed(big[i : i + 100])
        pytest.fail("not refused")


def test_msgpack_limit_counts_the_whole_packet_not_the_buffer() -> None:
    # many small elements: the unpacker consumes them one by one, so only a
    # byte count across feeds catches this packet being too large
    decoder = MsgpackDecoder(1000)
    assert decoder.feed(b"\x92\xa1p\xdc\x03\x84") == []  # ["p", <array of 900 items>
    fed = 6
    with pytest.raises(RemoteProtocolError, match="max_packet"):
        for _ in range(900):
            decoder.feed(b"\xa1x")  # "x"
            fed += 2
        pytest.fail("not refused")
    assert fed == 1000


def test_msgpack_partial_packet_after_whole_ones_is_seen() -> None:
    # msgpack consumes the header and the whole elements of ["p", 1, <missing>]
    decoder = MsgpackDecoder()
    assert decoder.feed(msgpack.packb(["a"]) + b"\x93\xa1p\x01") == [["a"]]
    assert decoder.has_partial()
    assert decoder.feed(b"\x02") == [["p", 1, 2]]
    assert not decoder.has_partial()


def test_msgpack_limit_holds_for_a_packet_begun_behind_a_whole_one() -> None:
    decoder = MsgpackDecoder(100)
    # ["a"], then ["p", <array of 90 x "x">] of which 46 bytes arrive at once
    first = msgpack.packb(["a"]) + b"\x92\xa1p\xdc\x00\x5a" + b"\xa1x" * 20
    assert decoder.feed(first) == [["a"]]
    size = len(first) - 3
    with pytest.raises(RemoteProtocolError, match="max_packet"):
        while True:
            decoder.feed(b"\xa1x")
            size += 2
    assert size == 100


def test_json_big_packet_in_many_pieces_is_linear() -> None:
    packet = ["p", ["x" * 100] * 20_000]  # about 2 MB
    data = JsonEncoder().encode(packet)
    decoder = JsonDecoder()
    out = []
    for i in range(0, len(data), 1000):
        out += decoder.feed(data[i : i + 1000])
    assert out == [packet]


# -- properties ------------------------------------------------------------------

_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_MSGPACK_SCALARS = _JSON_SCALARS | st.floats(allow_nan=False) | st.binary(max_size=20)


def _packets(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[list[list[Any]]]:
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    packet = st.builds(
        lambda port, msg: [port, *msg], st.text(max_size=12), st.lists(values, max_size=5)
    )
    return st.lists(packet | st.just([]), min_size=1, max_size=6)


PACKETS = {"msgpack": _packets(_MSGPACK_SCALARS), "json": _packets(_JSON_SCALARS)}


def _roundtrip_every_split(framing: str, packets: list[list[Any]], sep: bytes) -> None:
    enc = make_encoder(framing)
    stream = sep.join(enc.encode(p) for p in packets)
    whole = make_decoder(framing).feed(stream)
    assert same(whole, packets)
    for i in range(len(stream) + 1):
        decoder = make_decoder(framing)
        out = decoder.feed(stream[:i])
        out += decoder.feed(stream[i:])
        assert same(out, packets), i
        assert not decoder.has_partial()


@EVERY_SPLIT
@given(packets=PACKETS["msgpack"])
def test_msgpack_roundtrip_at_every_split_point(packets: list[list[Any]]) -> None:
    _roundtrip_every_split("msgpack", packets, b"")


@EVERY_SPLIT
@given(packets=PACKETS["json"], sep=st.sampled_from([b"", b" ", b"\n", b"\r\n", b" \t "]))
def test_json_roundtrip_at_every_split_point(packets: list[list[Any]], sep: bytes) -> None:
    _roundtrip_every_split("json", packets, sep)


@FAST
@given(data=st.data(), framing=st.sampled_from(["msgpack", "json"]))
def test_roundtrip_random_chunking(data: st.DataObject, framing: str) -> None:
    packets = data.draw(PACKETS[framing])
    stream = b"".join(make_encoder(framing).encode(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = make_decoder(framing)
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert same(out, packets)


def _feed_garbage(framing: str, chunks: list[bytes]) -> None:
    decoder = make_decoder(framing, max_packet=4096)
    for chunk in chunks:
        try:
            packets = decoder.feed(chunk)
        except RemoteProtocolError:
            return
        for packet in packets:
            assert type(packet) is list
            assert not packet or type(packet[0]) is str


@FAST
@given(framing=st.sampled_from(["msgpack", "json"]), chunks=st.lists(st.binary(max_size=64)))
def test_arbitrary_bytes_decode_or_raise_remote_protocol_error(
    framing: str, chunks: list[bytes]
) -> None:
    _feed_garbage(framing, chunks)


@FAST
@given(data=st.data(), framing=st.sampled_from(["msgpack", "json"]))
def test_mutated_streams_decode_or_raise_remote_protocol_error(
    data: st.DataObject, framing: str
) -> None:
    packets = data.draw(PACKETS[framing])
    stream = bytearray(b"".join(make_encoder(framing).encode(p) for p in packets))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(stream)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not stream or pos == len(stream):
            stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
        elif action == "flip":
            stream[pos] ^= data.draw(st.integers(1, 255))
        else:
            del stream[pos]
    cut = data.draw(st.integers(0, len(stream)))
    _feed_garbage(framing, [bytes(stream[:cut]), bytes(stream[cut:])])


def test_json_decoder_agrees_with_json_loads_on_a_sample() -> None:
    text = '["a",{"b":[1,-2.5e3,"\\u00e9\\n\\"]["]},true,false,null]'
    assert JsonDecoder().feed(text.encode()) == [json.loads(text)]
