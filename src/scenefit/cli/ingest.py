"""Verb module 'ingest' (commands registered on scenefit.cli.app)."""
