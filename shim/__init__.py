"""Process entry points, the ttrpc package and the Task service (the RPC edge)."""
