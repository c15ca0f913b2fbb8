"""Verb module 'evaluate' (commands registered on scenefit.cli.app)."""
