"""Local tooling: the Moltin emulator, tunnels, the ``webhook-receiver`` script and the pytest plugin."""
