"""``python -m resnet_cli`` (also the entry point torchrun uses: ``torchrun -m resnet_cli train ...``)."""

from resnet_cli.cli.app import main

if __name__ == "__main__":
    main()
