"""mdsrec: multimodal sequential recommendation (MDSRec, arXiv 2412.08103) and its baselines.

Importing the package has no side effects: no logging configuration, no global seeds, no downloads.
"""

__version__ = "0.1.0"
