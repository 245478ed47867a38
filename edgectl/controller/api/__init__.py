"""The HTTP front end: FastAPI enters the controller here and in ``app``."""
