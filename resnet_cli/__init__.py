"""resnet-cli: train, evaluate and compare from-scratch ResNets on any ImageFolder dataset.

The library is usable without the command line::

    from resnet_cli.models import build_model
    model = build_model("resnet34", num_classes=10, in_channels=1, small_input=True)
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
