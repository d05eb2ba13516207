"""Topology of point clouds and representations (issue 4, in progress): so far the exact
Euclidean minimum spanning tree, i.e. the H0 persistence of the Vietoris-Rips filtration."""

from .mst import SpanningTree, minimum_spanning_tree

__all__ = ["minimum_spanning_tree", "SpanningTree"]
