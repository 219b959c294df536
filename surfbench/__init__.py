"""surfbench: a reproducible benchmark for unsupervised source separation (SURF and baselines)."""
__version__ = "0.1.0"
