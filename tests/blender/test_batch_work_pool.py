"""The batch's job accounting (seethrough/batch/work_pool.py) with real threads: a worker never leaves
while a chain is out with another, a chain given back is taken by the next live worker, and when the
last server gives up what is left comes back to be failed by name."""

from __future__ import annotations

import threading

from seethrough.batch.consistent import Chain
from seethrough.batch.work_pool import WorkPool


def chain() -> Chain:
    return Chain([])


def test_a_worker_waits_for_a_chain_that_may_come_back_instead_of_leaving():
    pool = WorkPool(servers=2)
    lost = chain()
    assert pool.put(lost)
    pool.close()  # the main thread has put everything
    assert pool.take() is lost  # server B takes it ...
    taken: list[Chain | None] = []
    live = threading.Thread(target=lambda: taken.append(pool.take()))  # ... and server A has nothing
    live.start()
    live.join(0.5)
    assert live.is_alive(), "worker A left while B's chain could still come back"
    pool.give_back(lost)  # B died
    live.join(10)
    assert taken == [lost]
    pool.finish(lost)
    assert pool.take() is None and pool.wait_until_done(0)  # now everything is finished


def test_the_last_server_to_give_up_gets_what_is_left_and_nothing_more_is_queued():
    pool = WorkPool(servers=2)
    first, second = chain(), chain()
    assert pool.put(first) and pool.put(second)
    assert pool.leave() == []  # another server is still there to run them
    assert pool.take() is first
    pool.give_back(first)
    assert pool.leave() == [first, second]  # the last one: both to be failed by name
    assert not pool.put(chain())  # the main thread fails later chains itself
    pool.close()
    assert pool.wait_until_done(0)


def test_a_stopped_pool_hands_out_nothing_and_refuses_chains():
    pool = WorkPool(servers=1)
    assert pool.put(chain())
    pool.stop()
    assert pool.take() is None and not pool.put(chain()) and pool.stopping
