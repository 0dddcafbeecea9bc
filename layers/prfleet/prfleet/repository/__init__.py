"""The repository the agents look at: its snapshot at the head, views and search over it, where to look, and the
repository's own review instructions (from the base branch). Sits above `github`; `agents` and `pipeline` use it."""
