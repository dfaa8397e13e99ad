# The version of aemp, read by aemp/__init__.py and by the greeting the
# network sends.

__version__ = "0.1.0"
