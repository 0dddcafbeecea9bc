"""Observability: structured events (Powertools Logger), EMF metrics, and the redaction of secrets from both."""
