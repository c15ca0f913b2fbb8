"""Verb module 'predict' (commands registered on scenefit.cli.app)."""
