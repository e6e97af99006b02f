"""What the benchmark writes and the site reads, and the FLOP/byte model both use.

Standard library only: the GPU box that runs ``scripts/benchmark.py`` needs torch and
triton and nothing else, and the site reads the same files without torch.

- ``perfdata.schema``: the JSON format of ``docs/data/<suite>.<gpu>.json``, validated.
- ``perfdata.traffic``: FLOPs and bytes moved per attention design (a model, not a measurement).
- ``perfdata.shards``: one suite's run cut into shards (one device call each) and merged back.
"""
