"""The durable queue under async invocations, schedules, the event bus and workflows: the `JobQueue`
seam (`queue`), its implementations on the store (`StoreQueue`) and on NATS JetStream
(`NatsQueue`), and the async calls that run on it (`AsyncCalls`)."""

from control_plane.jobs.async_calls import AsyncCalls, AsyncSettings, Outcome, attempt_id
from control_plane.jobs.nats_queue import NatsQueue
from control_plane.jobs.queue import DEDUPE_S, Job, JobQueue, JobQueueError, Lease, LeaseLost
from control_plane.jobs.store_queue import StoreQueue
from control_plane.jobs.worker import keep_lease, serve_queue, wait_backoff

__all__ = ["DEDUPE_S", "AsyncCalls", "AsyncSettings", "Job", "JobQueue", "JobQueueError", "Lease",
           "LeaseLost", "NatsQueue", "Outcome", "StoreQueue", "attempt_id", "keep_lease", "serve_queue",
           "wait_backoff"]
