"""Test support shared by the unit tier (tests/), the netns tier (netns-tests/),
the lab (edgectl/lab) and the benchmarks (bench/).

Nothing in the product (controller, agent, portal, client, model) imports it;
an import contract in pyproject says so.
"""
