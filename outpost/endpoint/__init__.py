"""The endpoint agent: runs tasks from the service on this machine."""
