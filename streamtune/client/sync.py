"""The blocking form of the producer client, for code without an event loop.

:class:`SyncProducer` owns one :class:`~streamtune.client.producer.StreamtuneProducer` and
runs it on an event loop of its own, in a daemon thread started by ``start()`` (or ``with``).
Each call hands its coroutine to that loop and blocks until it returns, so:

- it works from any thread, including one whose own loop is running (a notebook, an async
  framework's worker thread): the client never touches the caller's loop;
- validation errors and delivery errors are raised in the caller, as in the async form;
- backpressure blocks the caller (a send waits while ``max_in_flight`` records are
  unacknowledged);
- several threads may share one ``SyncProducer``; their calls run one after another on its loop.

``asyncio.run`` per call was not chosen: the producer's connections, batches and
acknowledgements belong to one loop, and a loop per call would reconnect every time.
Each call costs a thread hand-off (tens of microseconds); the async form is faster.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from streamtune.client.producer import StreamtuneProducer
from streamtune.core.settings import Settings

T = TypeVar("T")


class SyncProducer:
    """Blocking ``send_interaction``/``send_feedback``/``flush``; arguments as
    :class:`~streamtune.client.producer.StreamtuneProducer`::

        with SyncProducer(bootstrap_servers="kafka:9092", source="crm") as client:
            client.send_interaction("order-42", task="tfns-sentiment", text="$AAPL beats")
            client.feedback_from("desk").send("order-42", task="tfns-sentiment", label=2)
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        self._client = StreamtuneProducer(settings, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def client(self) -> StreamtuneProducer:
        """The async client underneath (its counters: ``sent``, ``acknowledged``)."""
        return self._client

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="streamtune-client", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._client.start())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        """Flush, disconnect and end the client's thread."""
        if self._loop is None:
            return
        try:
            self._call(self._client.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self._call(self._client.__aexit__(exc_type, exc, tb))
        finally:
            self._stop_loop()

    def send_interaction(self, interaction_id: str, **fields: Any) -> None:
        """As :meth:`StreamtuneProducer.send_interaction`, blocking."""
        self._call(self._client.send_interaction(interaction_id, **fields))

    def send_feedback(self, interaction_id: str, **fields: Any) -> None:
        """As :meth:`StreamtuneProducer.send_feedback`, blocking."""
        self._call(self._client.send_feedback(interaction_id, **fields))

    def feedback_from(self, source: str, *, task: str | None = None) -> SyncFeedbackSender:
        """As :meth:`StreamtuneProducer.feedback_from`: feedback that carries ``source``."""
        return SyncFeedbackSender(self, source, task)

    def flush(self) -> None:
        """As :meth:`StreamtuneProducer.flush`: blocks until every record is acknowledged."""
        self._call(self._client.flush())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the client is not started; use `with SyncProducer(...)`")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncProducer called from its own loop; use StreamtuneProducer")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class SyncFeedbackSender:
    """Feedback from one labeller, blocking; made by :meth:`SyncProducer.feedback_from`."""

    def __init__(self, producer: SyncProducer, source: str, task: str | None) -> None:
        self._producer = producer
        self._sender = producer.client.feedback_from(source, task=task)
        self.source = source

    def send(self, interaction_id: str, *, label: int, **fields: Any) -> None:
        self._producer._call(self._sender.send(interaction_id, label=label, **fields))
