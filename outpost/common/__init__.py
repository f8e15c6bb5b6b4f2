"""Pieces shared by the SDK, the service and the endpoint. No I/O lives here."""
