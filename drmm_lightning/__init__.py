"""drmm-lightning: the Deep Rendering Mixture Model (Patel, Nguyen, Baraniuk, NIPS 2016)."""

__version__ = "0.1.0"
