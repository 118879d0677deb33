"""The lifecycle core: no protobuf, no sockets. Backends live in subpackages."""
