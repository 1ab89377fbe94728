"""The master's message handlers: one per master queue, each a callable that takes a
batch of deliveries and returns one verdict per delivery.

- :class:`~consumers.master.status.StatusHandler`: ``task.*`` reports into the catalog.
- :class:`~consumers.master.heartbeat.HeartbeatHandler`: worker heartbeats and their
  cancel replies.
- :class:`~consumers.master.fetch.FetchHandler`: project archives by content hash.
- :class:`~consumers.master.wake.WakeHandler`: a nudge to the dispatcher.

They reach the catalog and the broker only through the narrow protocols each declares,
so :mod:`dispatcher.testing` can drive them on in-memory fakes.
"""
