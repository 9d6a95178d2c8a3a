"""runtime.ebb: a stage takes its next batch only when faust's producer buffer is short again."""

from __future__ import annotations

import asyncio

from carehub.runtime.stage import ebb


class Buffer:
    """A producer buffer that sends ``per_call`` records per flush_atmost, then gives up (a 0.1 s timeout)."""

    def __init__(self, size: int, per_call: int) -> None:
        self._size, self.per_call, self.calls = size, per_call, 0

    @property
    def size(self) -> int:
        return self._size

    async def flush_atmost(self, n: int) -> int:
        self.calls += 1
        sent = min(self.per_call, self._size, n)
        self._size -= sent
        await asyncio.sleep(0)
        return sent


def test_a_long_buffer_is_drained_down_to_the_limit_and_no_further() -> None:
    buffer = Buffer(size=50_000, per_call=7_000)
    asyncio.run(ebb(buffer, 20_000))
    assert buffer.size == 20_000 and buffer.calls == 5  # 7,000 x 4 then the last 2,000


def test_a_short_buffer_does_not_wait() -> None:
    buffer = Buffer(size=20_000, per_call=1)
    asyncio.run(ebb(buffer, 20_000))
    assert buffer.calls == 0


def test_a_producer_that_cannot_send_holds_the_stage() -> None:
    buffer = Buffer(size=30_000, per_call=0)

    async def main() -> bool:
        task = asyncio.ensure_future(ebb(buffer, 20_000))
        await asyncio.sleep(0.05)
        held = not task.done()
        task.cancel()
        return held

    assert asyncio.run(main()) and buffer.size == 30_000
