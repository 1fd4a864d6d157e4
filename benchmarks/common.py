"""What every benchmark prints with its figures: the machine it measured on."""

from train.machine import summary as machine  # noqa: F401
