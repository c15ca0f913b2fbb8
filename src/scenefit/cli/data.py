"""Verb module 'data' (commands registered on scenefit.cli.app)."""
