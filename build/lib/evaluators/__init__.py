"""What a network costs and how good it is: static cost, GPU profiler, data, accuracy proxies.

Submodules are imported on use (``evaluators.cost``, ``evaluators.profiler``, ``evaluators.data``,
``evaluators.proxies``, ``evaluators.train``) so that importing one does not pull in the others.
"""
