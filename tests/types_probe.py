"""Checked with mypy --strict by test_first_steps.py, never run: what the
API's types promise. Each ``type: ignore`` marks an error mypy must report
(strict mode flags an ignore that is not needed), so a type that decays to
Any, or a callback type that takes anything, fails the check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aemp


async def replies(node: aemp.Node) -> None:
    reply: tuple[Any, ...] = await aemp.cal("n#p", "ping")
    family: dict[str, Any] = await aemp.db_family("f")
    keys: list[str] = await node.db_keys("f")
    values: list[Any] = await aemp.db_values("f")
    families: dict[str, int] = await aemp.db_families()
    joined: str = await aemp.wait_joined(timeout=1)
    port: str = aemp.self_port()
    print(reply, family, keys, values, families, joined, port)
    wrong_reply: int = await aemp.cal("n#p", "ping")  # type: ignore[assignment]
    wrong_keys: dict[str, Any] = await aemp.db_keys("f")  # type: ignore[assignment]
    wrong_port: None = aemp.self_port()  # type: ignore[assignment]
    print(wrong_reply, wrong_keys, wrong_port)


def callbacks() -> None:
    def died(*reason: Any) -> None:
        print(reason)

    def changed(
        view: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        print(view, added, changed, deleted)

    async def changed_async(
        view: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        print(view)

    def one_argument(view: Mapping[str, Any]) -> None:
        print(view)

    aemp.mon("n#p", died)
    aemp.mon("n#p", lambda *reason: print(reason))
    aemp.mon("n#p", "n#other", "message", 1)
    aemp.mon("n#p")
    aemp.mon("n#p", 42)  # type: ignore[call-overload]
    aemp.db_mon("f", changed)
    aemp.db_mon("f", changed_async)
    aemp.db_mon("f", one_argument)  # type: ignore[arg-type]
    aemp.db_mon("f", lambda view, added, changed, deleted: print(view))
