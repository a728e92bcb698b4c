"""ssl-ray: semi-supervised learning methods, trained with Ray Train and tuned with Ray Tune."""

__version__ = "0.1.0"
