"""Verb module 'serve' (commands registered on scenefit.cli.app)."""
