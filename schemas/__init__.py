"""Wire contracts and the state machine shared by the master and the workers. No I/O here."""
