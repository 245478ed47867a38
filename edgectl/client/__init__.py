"""The abuse desk's client: ``edgectl who``, ``quarantine``, ``exempt`` and friends.

It talks to the controller over REST only (never imports the controller or
the agent), so it runs on any workstation with a token.  One module a job:
``config`` (URL, token, CA), ``transport`` (HTTP and its failures),
``timespec`` (times and durations as typed), ``output`` (tables and JSON),
``verbs`` (the subcommands).
"""
