"""The RADIUS accounting feed: a UDP server in the controller process that turns a
BNG's Accounting-Requests into session bindings, answering each only after its
binding is committed.

``config`` reads ``[controller.radius]`` and the clients file, ``codec`` is the
only user of pyrad, ``events`` turns decoded packets into store events, and
``server`` runs the sockets, the bounded queue and the batched commits.
"""
