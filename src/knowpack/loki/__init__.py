"""LoKI (PAPERS.md §2): train only the down_proj rows that matter least to what the model already does.

- `kva.py`: Knowledge Vector Attribution, a score per down_proj row (node) from integrated gradients;
- `select.py`: layer-balanced (and other) selection of the rows to train from those scores;
- `layer.py`: the LoKI layer: those rows as the only trainable parameters, save / load / merge / export.

Import-light: the submodules import torch when they are used, this package does not.
"""
