"""The package version, kept apart so ``setup.cfg`` can read it without importing Flask."""

__version__ = "0.1.0.dev0"
