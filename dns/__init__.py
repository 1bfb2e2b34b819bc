"""netplug's DNS: container names and API registrations from the store, answered over UDP/TCP.

See README.md beside this file. The pure parts (``registry``, ``resolve``,
``records``, ``cache``) never touch a socket or the store; ``server``,
``upstream``, ``follow`` and ``api`` are the I/O shell around them.
"""
