"""Message consumers: the master's status, heartbeat and fetch reconcilers, and the
reference worker agent (``consumers.agent``), which never imports the catalog."""
