"""Kernels the router never runs, kept because a post shows them and their measurements.

``warpspec``: post 4's tensor-descriptor forward with Triton's automatic warp specialisation.
"""
