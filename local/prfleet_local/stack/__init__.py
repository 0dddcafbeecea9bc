"""The local stack: the same handlers on moto, read from template.yaml, with Lambda-like pollers."""
