"""Shared test support: the real OpenSearch node, a fault-injecting proxy, a live HTTP server, tiny
real ONNX models and photo collections. Test files import it as ``support`` (``tests/`` is on
``sys.path`` under pytest's default rootdir-based import mode, as ``tests/`` has no ``__init__.py``).
"""
