"""Network-namespace lab: real topologies and real TCP/UDP probes for tests and benchmarks.

``netns`` wraps pyroute2 (the only module that imports it), ``topology``
builds and tears down a gateway with hosts around it, ``probe`` opens real
connections from inside those namespaces.  Nothing here touches the root
namespace's addresses, routes or ruleset.
"""
