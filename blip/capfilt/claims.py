"""Work sharing by claims: any number of ranks, started at any time, take tasks one by one.

A task (an input shard, the threshold calibration, the final manifest) is claimed by creating its
lease file exclusively on the shared output storage: `<task>.lease.<generation>` holding the owner
and an expiry. Exactly one creator of a given name succeeds, on a local or network file system
(a hard link, which fails when the name is taken) as with an object store's conditional put. The owner renews the expiry while it
works (a heartbeat thread). Whether a task is done is told by its committed result, never by a
lease; so leases are never deleted while the job runs (a released one is marked expired), which keeps
each task's generations unbroken, and the finished job clears them all.

A lease whose expiry has passed belongs to a dead or hung rank: whoever sees that claims the next
generation, `<task>.lease.<generation + 1>`, again by exclusive creation, so two rescuers cannot
both win. The old owner, if it was only slow, notices the newer generation at its next heartbeat and
gives the task up. Even when both finish, nothing breaks: a task's result is a pure function of its
inputs and is committed by an atomic rename, so both write the same bytes.

Expiry is judged against the reader's clock: the nodes' clocks must agree to well within the lease
time (NTP does).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from blip.data.shards import atomic_write_json


def create_new(path: Path, text: str) -> bool:
    """Create `path` holding `text` unless it exists; False when it does. The file appears whole (written
    under a name of its own, then hard-linked into place, which fails if the name is taken), so a reader
    never sees it empty; link is atomic on local and network file systems alike."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def owner_id(rank: int) -> str:
    """A name for this process that no other claimer shares (host, pid, rank and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:rank{rank}:{uuid.uuid4().hex[:8]}"


class LeaseLost(RuntimeError):
    """Another rank took this task over: our lease had expired."""


class Lease:
    """A held claim on one task; renews itself until released."""

    def __init__(self, claims: Claims, task: str, generation: int):
        self.claims, self.task, self.generation = claims, task, generation
        self.path = claims.lease_path(task, generation)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"lease-{task}")
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.claims.ttl / 4):
            try:
                if not self.claims.lease_path(self.task, self.generation + 1).exists():
                    self.claims.write_lease(self.path)
                    continue
            except OSError:  # the finished job cleared its claims: nothing is left to hold
                pass
            self._lost.set()
            return

    def check(self) -> None:
        """Raise LeaseLost when another rank has taken the task over (call between units of work)."""
        if self._lost.is_set():
            raise LeaseLost(f"{self.task}: taken over by another rank after this one's lease expired")

    def release(self) -> None:
        """Stop renewing and let the lease expire now (after the task's result is committed, or on failure)."""
        self._stop.set()
        self._beat.join()
        if not self._lost.is_set():
            with contextlib.suppress(OSError):  # a finished job's claims may be cleared already
                self.claims.write_lease(self.path, expires=0.0)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Claims:
    """Exclusive, expiring claims on named tasks, kept as files in one shared folder."""

    def __init__(self, folder: Path, owner: str, ttl: float):
        self.folder, self.owner, self.ttl = Path(folder), owner, ttl

    def lease_path(self, task: str, generation: int) -> Path:
        """The file of one generation of a task's lease."""
        return self.folder / f"{task}.lease.{generation}"

    def write_lease(self, path: Path, expires: float | None = None) -> None:
        """(Re)write a lease this process holds, expiring `ttl` from now unless told otherwise."""
        atomic_write_json(path, {"owner": self.owner, "expires": time.time() + self.ttl if expires is None else expires})

    def _create(self, task: str, generation: int) -> Lease | None:
        lease = json.dumps({"owner": self.owner, "expires": time.time() + self.ttl})
        try:
            if not create_new(self.lease_path(task, generation), lease):
                return None
        except FileNotFoundError:  # the finished job cleared its claims
            return None
        return Lease(self, task, generation)

    def _latest(self, task: str) -> int:
        """The highest lease generation of a task (-1: never claimed)."""
        generation = -1
        while self.lease_path(task, generation + 1).exists():
            generation += 1
        return generation

    def expired(self, task: str, generation: int) -> bool:
        """Whether a lease's expiry has passed."""
        lease = json.loads(self.lease_path(task, generation).read_text())
        return time.time() > float(lease["expires"])

    def live(self) -> list[str]:
        """Every lease not yet expired, as 'task (owner)': some process is working in this folder."""
        found = []
        for path in sorted(self.folder.glob("*.lease.*")) if self.folder.is_dir() else []:
            try:
                lease = json.loads(path.read_text())
            except (OSError, ValueError):  # released and cleared while we looked
                continue
            if time.time() <= float(lease["expires"]):
                found.append(f"{path.name.rsplit('.lease.', 1)[0]} ({lease['owner']})")
        return found

    def try_claim(self, task: str) -> Lease | None:
        """Claim a task that nobody holds, or whose holder's lease has expired; None when it is taken."""
        latest = self._latest(task)
        if latest >= 0 and not self.expired(task, latest):
            return None
        return self._create(task, latest + 1)
