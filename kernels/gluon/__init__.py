"""Post 5: the Gluon kernels for Hopper (sm90), one per file.

- ``common``: the Triton-version layer, layouts, descriptors, the ring helpers, the scope check;
- ``forward``: the warp-specialised forward (serial, pipelined and ping-pong consumer schedules);
- ``dkdv``: the backward's dK/dV pass;
- ``dq``: the backward's dQ pass.

Imports run one way: ``common`` <- ``forward`` <- ``dkdv`` <- ``dq``. The router
(``kernels/attention.py``) decides when they run; ``kernels.plan`` says why.
"""
