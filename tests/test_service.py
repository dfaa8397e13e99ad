"""Error replies: service ports answer a handler's exception to the caller
and live on; cal raises RemoteError; the wire form is plain data any client
can send or read (docs/protocol.md, "Error replies")."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import free_port, until

import aemp
from aemp import lowlevel
from aemp.service import ERROR_TAG, answer, answer_error, error_reply, service

SECRET = "service-secret"


async def start(stack: AsyncExitStack, **keys: Any) -> aemp.Node:
    node = aemp.Node(secret=SECRET, monitor_timeout=2.0, **keys)
    stack.push_async_callback(node.close)
    return await node.start()


async def test_a_handler_exception_is_an_error_reply_and_the_port_lives() -> None:
    def div(a: int, b: int) -> float:
        return a / b

    svc = service(div=div)
    assert await aemp.cal(svc, "div", 6, 3) == (2.0,)
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(svc, "div", 1, 0)
    assert isinstance(e.value, aemp.AempError) and isinstance(e.value, RuntimeError)
    assert (e.value.port, e.value.type, e.value.message) == (
        svc,
        "ZeroDivisionError",
        "division by zero",
    )
    assert "in div" in e.value.traceback and "ZeroDivisionError" in e.value.traceback
    assert "ZeroDivisionError: division by zero" in str(e.value)
    # the malformed request of the issue: too few arguments
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(svc, "div", 2)
    assert (
        e.value.type == "TypeError" and "missing 1 required positional argument" in e.value.message
    )
    assert lowlevel.port_alive(lowlevel.current_node(), svc)
    assert await aemp.cal(svc, "div", 9, 3) == (3.0,)


async def test_unknown_tags_unsendable_results_and_async_handlers() -> None:
    async def later(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x + 1

    svc = service({"later": later, "odd tag": lambda: 1}, bad=lambda: object())
    assert await aemp.cal(svc, "later", 1) == (2,)
    assert await aemp.cal(svc, "odd tag") == (1,)
    with pytest.raises(aemp.RemoteError, match="negative: -1") as e:
        await aemp.cal(svc, "later", -1)
    assert e.value.type == "ValueError"
    with pytest.raises(aemp.RemoteError, match="no handler for 'nope'") as e:
        await aemp.cal(svc, "nope")
    assert e.value.type == "LookupError" and "'later'" in e.value.message
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(svc, "bad")
    assert e.value.type.endswith("MessageError")
    assert await aemp.cal(svc, "later", 5) == (6,)


async def test_answer_and_answer_error_for_a_handler_of_ones_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = lowlevel.current_node()

    async def later() -> int:
        await asyncio.sleep(0)
        return 7

    def handler(kind: str, reply: str) -> Any:
        if kind == "plain":
            return answer(node, reply, [1, "two"])
        if kind == "unsendable":
            return answer(node, reply, object())  # an error reply, not a dead port
        if kind == "later":
            pending = answer(node, reply, later())
            assert asyncio.iscoroutine(pending)  # nothing sent yet: the caller runs it
            return pending
        answer_error(node, reply, KeyError(kind))
        return None

    p = aemp.port(handler)
    assert await aemp.cal(p, "plain", timeout=5) == ([1, "two"],)
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(p, "unsendable", timeout=5)
    assert e.value.type.endswith("MessageError")
    assert await aemp.cal(p, "later", timeout=5) == (7,)
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(p, "other", timeout=5)
    assert (e.value.type, e.value.message) == ("KeyError", "'other'")
    assert lowlevel.port_alive(node, p)
    with caplog.at_level(logging.WARNING, logger="aemp.service"):
        assert answer(node, "not a port", 1) is None  # logged, nothing raised
        answer_error(node, "", ValueError("x"))
    assert caplog.text.count("cannot") == 2


async def test_the_default_handler_gets_the_message_without_the_reply_port() -> None:
    svc = service(lambda *msg: list(msg))
    assert await aemp.cal(svc, "any", 1, [2]) == (["any", 1, [2]],)


async def test_a_message_without_a_reply_port_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = service(add=lambda a, b: a + b)
    with caplog.at_level(logging.WARNING, logger="aemp.service"):
        aemp.snd(svc, "add", 1, 2, 3)
        aemp.snd(svc, "add", 1, 2, "a_node_id")  # no port ID: never dialled
        assert await aemp.cal(svc, "add", 1, 2) == (3,)
    assert caplog.text.count("without a reply port") == 2
    assert "a_node_id" not in lowlevel.statistics(lowlevel.current_node())["remotes"]


async def test_the_callback_form_gets_the_error_in_err() -> None:
    svc = service(boom=lambda: 1 / 0)
    got: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    aemp.cal(svc, "boom", cb=lambda *r: None, err=got.set_result)
    exc = await asyncio.wait_for(got, 5)
    assert isinstance(exc, aemp.RemoteError) and exc.type == "ZeroDivisionError"


async def test_a_plain_port_still_dies_when_its_callback_raises() -> None:
    p = aemp.port(boom=lambda reply: 1 / 0)
    with pytest.raises(aemp.PortDead, match="ZeroDivisionError"):
        await aemp.cal(p, "boom", timeout=5)


async def test_error_replies_cross_the_wire(stack: AsyncExitStack) -> None:
    addr = f"127.0.0.1:{free_port()}"
    a = await start(stack, nodeid="a", binds=[addr])
    b = await start(stack, nodeid="b", binds=["127.0.0.1:0"], seeds=[addr])

    def parse(text: str) -> int:
        return int(text)

    svc = service(parse=parse, node=b)
    await until(lambda: a.node_is_up("b"), what="b attached to its seed a")
    assert await a.cal(svc, "parse", "12", timeout=5) == (12,)
    with pytest.raises(aemp.RemoteError) as e:
        await a.cal(svc, "parse", "x", timeout=5)
    assert e.value.port == svc and e.value.type == "ValueError"
    assert "invalid literal for int()" in e.value.message and "in parse" in e.value.traceback
    assert await a.cal(svc, "parse", "7", timeout=5) == (7,)


async def test_any_client_can_send_an_error_reply_and_malformed_ones_are_shown() -> None:
    # a port that is no service, as a Perl node would answer: plain data
    fake = aemp.port(lambda *m: aemp.snd(m[-1], *m[:-1]))
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(fake, ERROR_TAG, "Some::Error", "it broke", "at line 3", timeout=5)
    assert (e.value.type, e.value.message, e.value.traceback) == (
        "Some::Error",
        "it broke",
        "at line 3",
    )
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(fake, ERROR_TAG, 5, timeout=5)
    assert (e.value.type, e.value.message, e.value.traceback) == ("5", "", "")
    with pytest.raises(aemp.RemoteError) as e:
        await aemp.cal(fake, ERROR_TAG, timeout=5)
    assert e.value.type == "aemp.MalformedErrorReply"


def test_error_reply_is_plain_bounded_data() -> None:
    class Odd(Exception):
        pass

    try:
        raise Odd("\ud800 lone surrogate " + "x" * 100_000)
    except Odd as exc:
        tag, kind, message, tb = error_reply(exc)
    assert tag == ERROR_TAG
    assert kind.endswith("test_error_reply_is_plain_bounded_data.<locals>.Odd")
    assert len(message) <= 4096 and "lone surrogate" in message and "\ud800" not in message
    assert len(tb) <= 16384 and tb.rstrip().endswith("x")
    assert error_reply(KeyError("k"))[1:3] == ("KeyError", "'k'")
