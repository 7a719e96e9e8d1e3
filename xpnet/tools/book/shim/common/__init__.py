"""The book's ``common`` package, from xpnet: layers, functions, gradients, optimizers, networks, Trainer."""
