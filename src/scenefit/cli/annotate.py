"""Verb module 'annotate' (commands registered on scenefit.cli.app)."""
