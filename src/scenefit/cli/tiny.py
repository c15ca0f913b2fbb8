"""Verb module 'tiny' (commands registered on scenefit.cli.app)."""
