"""attnfast: AttnGAN as a performance engine."""
__version__ = "0.1.0"
