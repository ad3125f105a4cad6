"""`NatsQueue`: the `JobQueue` on a NATS JetStream server, for deployments that outgrow one database.

Why JetStream (and not RabbitMQ, which the original design named): its pull consumers are a job
queue with exactly the queue's vocabulary — an ack wait is a lease, `+WPI` extends it, `NAK` with
a delay is a retry with back-off, a message that is not acked in time is delivered again
(at-least-once), and the `Nats-Msg-Id` header makes a publish idempotent for the stream's
duplicate window. RabbitMQ has none of leases, per-message delays or publish de-duplication without
plugins and side queues. The server is one static binary that starts in milliseconds (Debian's
`nats-server`), which keeps the test suite fast; the client is `nats-py`, the project's own.

Layout: one stream (`CUMULUS_JOBS`, work-queue retention, file storage, `duplicate_window` =
`dedupe_s`) with a subject per queue (`cumulus.jobs.<queue>`), and one durable pull consumer per
queue (ack wait = `lease_s`, unlimited deliveries). A job whose time has not come yet is handed
back by the taker with a NAK delayed until then (JetStream 2.9 has no scheduled delivery).

Unlike the store's, this queue cannot fence a lease: JetStream takes an ack from an expired
delivery as the job's. So `extend`, `done` and `retry` never raise `LeaseLost` here; a stale `done`
removes a job another worker holds (whose own `done` is then a no-op). Workers fence their work by
request id and attempt in their own records (`control_plane.jobs.worker`), as the contract asks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from control_plane.jobs.queue import DEDUPE_S, Job, JobQueueError, Lease

STREAM = "CUMULUS_JOBS"
SUBJECT = "cumulus.jobs"
AVAILABLE_AT = "Cumulus-Available-At"
KEY = "Nats-Msg-Id"


class NatsQueue:
    """The durable queue on JetStream (`url`: `nats://host:port`)."""

    def __init__(self, url: str, *, lease_s: float = 60.0, dedupe_s: float = DEDUPE_S,
                 wall: Callable[[], float] = time.time) -> None:
        self.url = url
        self.lease_s = lease_s
        self.dedupe_s = dedupe_s
        self.wall = wall
        self._nc: Any = None
        self._js: Any = None
        self._subs: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def _jetstream(self) -> Any:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        async with self._lock:
            if self._js is not None:
                return self._js
            try:
                nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1,
                                        reconnect_time_wait=0.5, allow_reconnect=True)
            except Exception as exc:
                raise JobQueueError(f"the job broker at {self.url} does not answer: {exc}") from exc
            js = nc.jetstream(timeout=10)
            config = StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"],
                                  retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                                  duplicate_window=self.dedupe_s)
            try:
                await js.add_stream(config)
            except BadRequestError:  # it exists, maybe made with other settings: bring it in line
                await js.update_stream(config)
            self._nc, self._js = nc, js
            return js

    async def _sub(self, queue: str) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        sub = self._subs.get(queue)
        if sub is None:
            js = await self._jetstream()
            config = ConsumerConfig(durable_name=_durable(queue), ack_policy=AckPolicy.EXPLICIT,
                                    ack_wait=self.lease_s, max_deliver=-1, deliver_policy=DeliverPolicy.ALL,
                                    filter_subject=f"{SUBJECT}.{queue}", max_ack_pending=-1)
            sub = await js.pull_subscribe(f"{SUBJECT}.{queue}", durable=_durable(queue), stream=STREAM,
                                          config=config)
            self._subs[queue] = sub
        return sub

    async def put(self, jobs: Sequence[Job]) -> list[bool]:
        js = await self._jetstream()
        out = []
        for job in jobs:
            data = job.encoded()
            headers = {KEY: f"{job.queue}:{job.key}", AVAILABLE_AT: repr(float(job.available_at))}
            try:
                ack = await js.publish(f"{SUBJECT}.{job.queue}", data, headers=headers)
            except Exception as exc:
                raise JobQueueError(f"the job broker refused a job: {exc}") from exc
            out.append(not ack.duplicate)
        return out

    async def take(self, queue: str, limit: int, wait_s: float = 0.0) -> list[Lease]:
        import nats.errors

        sub = await self._sub(queue)
        deadline = time.monotonic() + wait_s
        while True:
            left = max(0.0, deadline - time.monotonic())
            try:
                msgs = await sub.fetch(limit, timeout=max(0.05, left))
            except (nats.errors.TimeoutError, TimeoutError):
                msgs = []
            except Exception as exc:
                raise JobQueueError(f"the job broker failed: {exc}") from exc
            out = []
            now = self.wall()
            for msg in msgs:
                at = float((msg.headers or {}).get(AVAILABLE_AT, "0") or 0)
                if at > now:  # not yet: back until its time
                    await msg.nak(delay=at - now)
                    continue
                body = json.loads(msg.data)
                key = (msg.headers or {}).get(KEY, "").split(":", 1)[-1]
                out.append(Lease(queue, key, body, int(msg.metadata.num_delivered), msg.reply, handle=msg))
            if out or time.monotonic() >= deadline:
                return out

    async def extend(self, lease: Lease) -> None:
        try:
            await lease.handle.in_progress()
        except Exception as exc:
            raise JobQueueError(f"the job broker failed: {exc}") from exc

    async def done(self, lease: Lease) -> None:
        try:
            await lease.handle.ack_sync(timeout=10)
        except Exception as exc:
            raise JobQueueError(f"the job broker failed: {exc}") from exc

    async def retry(self, lease: Lease, delay_s: float) -> None:
        try:
            await lease.handle.nak(delay=max(0.0, delay_s) or None)
        except Exception as exc:
            raise JobQueueError(f"the job broker failed: {exc}") from exc

    async def depth(self, queue: str) -> int:
        js = await self._jetstream()
        try:
            info = await js.stream_info(STREAM, subjects_filter=f"{SUBJECT}.{queue}")
        except Exception as exc:
            raise JobQueueError(f"the job broker failed: {exc}") from exc
        return int((info.state.subjects or {}).get(f"{SUBJECT}.{queue}", 0))

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc, self._js, self._subs = self._nc, None, None, {}
            await nc.close()


def _durable(queue: str) -> str:
    return "q-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in queue)
