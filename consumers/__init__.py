"""The programs that consume messages, one package per runtime role.

- :mod:`consumers.master`: the handlers that run inside the Scale Out Master, one per
  master queue (status, heartbeat, fetch, wake), plus sender identity and verdicts.
- :mod:`consumers.worker`: the reference Scale Out Worker, a separate program that talks
  only to RabbitMQ and never imports the catalog.
"""
