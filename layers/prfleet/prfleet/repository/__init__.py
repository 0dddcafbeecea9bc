"""The repository the agents look at: its snapshot, the views over it, search, hints and its own instructions."""
