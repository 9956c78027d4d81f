"""Shard claims: exclusive, expiring, taken over when their holder stops renewing them."""

from __future__ import annotations

import json
import threading
import time

import pytest

from blip.capfilt.claims import Claims, LeaseLost


def test_a_task_is_held_by_one_claimer_at_a_time(tmp_path):
    a, b = Claims(tmp_path, "a", ttl=30), Claims(tmp_path, "b", ttl=30)
    lease = a.try_claim("shard-000000.tar")
    assert lease is not None and b.try_claim("shard-000000.tar") is None
    assert b.try_claim("shard-000001.tar") is not None  # other tasks stay free
    lease.release()  # released: free again at once (the result, not the lease, says a task is done)
    assert b.try_claim("shard-000000.tar") is not None


def test_racing_claimers_get_one_winner(tmp_path):
    winners, start = [], threading.Barrier(8)

    def claim(i: int) -> None:
        start.wait()
        if Claims(tmp_path, f"r{i}", ttl=30).try_claim("calibration") is not None:
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_a_stale_lease_is_taken_over_and_its_holder_told(tmp_path):
    slow = Claims(tmp_path, "slow", ttl=0.4).try_claim("shard-000003.tar")
    slow._stop.set()  # its heartbeat stops, as when the process hangs or its node dies
    slow._beat.join()
    rescuer = Claims(tmp_path, "rescuer", ttl=30)
    assert rescuer.try_claim("shard-000003.tar") is None  # still within its lease
    time.sleep(0.5)
    taken = rescuer.try_claim("shard-000003.tar")
    assert taken is not None and taken.generation == 1
    assert json.loads((tmp_path / "shard-000003.tar.lease.1").read_text())["owner"] == "rescuer"
    assert Claims(tmp_path, "third", ttl=30).try_claim("shard-000003.tar") is None  # the rescuer holds it now


def test_a_slow_holder_learns_that_its_task_was_taken_over(tmp_path):
    slow = Claims(tmp_path, "slow", ttl=0.4)
    lease = slow.try_claim("shard-000004.tar")
    # the slow holder's renewals stop reaching storage for longer than its lease (a stalled mount)
    lease.claims = Claims(tmp_path, "slow", ttl=0.4)
    lease.claims.write_lease = lambda path, expires=None: None
    time.sleep(0.5)
    assert Claims(tmp_path, "rescuer", ttl=30).try_claim("shard-000004.tar") is not None
    time.sleep(0.3)  # its next heartbeat sees the newer generation
    with pytest.raises(LeaseLost, match="taken over"):
        lease.check()
    lease.release()
    assert (tmp_path / "shard-000004.tar.lease.1").is_file()  # the rescuer's lease is left alone


def test_a_run_of_another_job_is_refused_while_the_folder_has_a_live_lease(tmp_path):
    from blip.capfilt.job import CLAIMS, PARTS, clear_other_job

    out = tmp_path / "scores"
    (out / CLAIMS).mkdir(parents=True)
    (out / PARTS / "fingerprint").write_text("the-running-job\n")
    (out / "scores-000000.parquet").write_bytes(b"its work")
    running = Claims(out / CLAIMS, "host:1:rank0", ttl=30)
    lease = running.try_claim("scores-000001.parquet")
    mine = Claims(out / CLAIMS, "host:2:rank0", ttl=30)
    with pytest.raises(RuntimeError, match=r"another capfilt job .* is running here, holding scores-000001.parquet "
                                           r"\(host:1:rank0\)"):
        clear_other_job(out, "another-job", mine)
    assert (out / "scores-000000.parquet").exists()  # nothing of the running job was touched
    lease.release()  # it stopped (a released or expired lease): its leftovers may be cleared
    clear_other_job(out, "another-job", mine)
    assert not (out / "scores-000000.parquet").exists()
