"""Per-sender in-flight limits (carehub/runtime/fairness.py), on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from carehub.runtime.fairness import InFlight


def test_a_sender_over_its_limit_waits_while_others_go_through() -> None:
    async def run() -> list[str]:
        limits = InFlight(per_sender=2)
        release = asyncio.Event()
        order: list[str] = []

        async def write(sender: str, name: str) -> None:
            async with limits.slot(sender):
                order.append(f"start {name}")
                if sender == "FLOOD":
                    await release.wait()
                order.append(f"end {name}")

        flood = [asyncio.create_task(write("FLOOD", f"f{i}")) for i in range(5)]
        await asyncio.sleep(0)
        assert limits.full("FLOOD") and limits.in_flight("FLOOD") == 2 and not limits.full("QUIET")
        await write("QUIET", "q")  # not held up by the flood's three waiting writes
        assert order == ["start f0", "start f1", "start q", "end q"]
        release.set()
        await asyncio.gather(*flood)
        assert len(limits) == 0  # nothing kept once nobody holds or waits
        return order

    order = asyncio.run(run())
    assert sorted(o for o in order if o.startswith("start f")) == [f"start f{i}" for i in range(5)]


def test_a_slot_is_released_when_the_write_fails() -> None:
    async def run() -> None:
        limits = InFlight(per_sender=1)
        with pytest.raises(RuntimeError):
            async with limits.slot("RR8"):
                raise RuntimeError("broker write failed")
        assert not limits.full("RR8") and len(limits) == 0
        async with limits.slot("RR8"):
            assert limits.full("RR8")

    asyncio.run(run())


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(per_sender=0)
