"""The repository the agents look at: a snapshot of the head (archive, snapshot), its views, search, hints and the
repository's own instructions. Sits above `github`: it may import github, jobs, config and observability."""
