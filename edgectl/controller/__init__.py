"""The controller: REST API, store and compile.  It never touches a kernel."""
