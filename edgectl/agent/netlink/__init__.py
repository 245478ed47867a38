"""The agent's nfnetlink library: kernel numbers, codec, socket.

Standard library only, and nothing of edgectl: ``constants`` (the kernel
headers' numbers), ``codec`` (messages and attributes to and from bytes,
pure), ``nfsocket`` (the socket, its dumps, requests and pipelines).  Its
users: the read-back (``kernel_readback``), the element batches
(``kernel_write``), flow cuts (``conntrack``) and the offender log
(``nflog``); ``edgectl.agent.table`` names the table they act on.
"""
