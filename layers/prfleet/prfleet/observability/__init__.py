"""Observability: structured events (events), the logger (logger), EMF metrics (metrics) and the redaction of
secrets from all of them (redaction)."""
