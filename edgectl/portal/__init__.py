"""The notice portal: walled-garden subscribers' HTTP lands here (DNAT on the
gateway); it tells them why, and lets a cleaned-up customer release a hold.

Its own process with its own settings, talking to the controller only over
REST with a ``portal``-role token (edgectl.controller.api.routers.portal).
"""
