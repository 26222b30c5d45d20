"""Data: sample digits, folder scans, stratified manifests, image decoding, transforms and loaders.

``scan``, ``split``, ``images`` and ``sample`` never import torch; ``transforms`` and ``dataset`` do.
"""
