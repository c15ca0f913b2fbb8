"""`python -m scenefit.cli VERB …` — the same command line as `scenefit VERB …` (how `scenefit run`
starts its stages: with this interpreter, so the same install runs them from any folder)."""

from scenefit.cli import main

if __name__ == "__main__":
    main()
