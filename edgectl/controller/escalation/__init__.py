"""Escalation: strikes from reports and offenders climb a policy's ladder of holds.

``ladder`` is the arithmetic (pure), ``engine`` the leader-only loop that
acts through the store, ``replay`` the same ladder over a past period.
"""
