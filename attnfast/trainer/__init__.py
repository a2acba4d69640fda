"""The training loops behind ``python -m attnfast.train``: DAMSM pretraining and AttnGAN."""
