import asyncio

from consumers.base import Source, supervise


class Flaky(Source):
    name = "flaky"

    def __init__(self, crashes: int) -> None:
        super().__init__()
        self.crashes = crashes
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            self.connected = True
            raise RuntimeError("bug in a batch")
        self.connected = True
        await self._stopping.wait()


async def test_a_crashed_source_is_marked_unhealthy_and_restarted() -> None:
    source = Flaky(crashes=1)
    task = asyncio.create_task(supervise(source))
    await asyncio.sleep(0.05)
    assert not source.healthy and source.failure == "crashed; restarting"
    await asyncio.sleep(1.2)
    assert source.runs == 2 and source.connected
    source.stop()
    await asyncio.wait_for(task, 2)


async def test_stopping_ends_the_supervision_even_while_waiting_to_restart() -> None:
    source = Flaky(crashes=10)
    task = asyncio.create_task(supervise(source))
    await asyncio.sleep(0.05)
    source.stop()
    await asyncio.wait_for(task, 2)
    assert source.runs == 1
