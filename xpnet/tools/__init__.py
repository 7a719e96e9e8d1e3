"""Tools built on xpnet's core: the command line, the experiments, the search, the benchmark report, the plots and the book's scripts.

Nothing in the core (``xpnet`` outside this package) imports from here.
"""
