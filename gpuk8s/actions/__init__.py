"""One module per command: each builds its ordered list of phases and runs it with the manager."""
