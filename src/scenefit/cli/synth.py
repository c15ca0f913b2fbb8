"""Verb module 'synth' (commands registered on scenefit.cli.app)."""
