"""The book's ``dataset`` package: ``dataset.mnist`` from xpnet's checked, cached MNIST."""
