"""The web console at /console: the abuse desk's pages, in the controller's process.

Server-rendered (Jinja2, ``templating``), readable with JavaScript off; the
one script (``static/console.js``) only refreshes the gateways table.  Every
page reads through the same store functions as the REST routes, and every
action goes through the REST routes' own functions (``quarantines.place``,
``lift``...), which make the same role check (``deps.require``): the console
has no policy of its own.  Sign-in exchanges an API token for a server-side
session (``signin``); the token never reaches a page.
"""
