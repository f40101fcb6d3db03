"""Serving a trained run: the Recommender (one run's model ranking histories), request files and the HTTP service."""

from mdsrec.serving.recommender import Recommender, Request

__all__ = ["Recommender", "Request"]
