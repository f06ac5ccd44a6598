"""What each Make target does and prints: one function per `pipelines/*.py` door, returning its exit status.

The doors only parse arguments and call these; tests call them directly.
"""
