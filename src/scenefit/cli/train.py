"""Verb module 'train' (commands registered on scenefit.cli.app)."""
