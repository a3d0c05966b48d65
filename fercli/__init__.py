"""fercli: find faces, tell their emotions, train and evaluate emotion models."""
__version__ = "0.1.0"
