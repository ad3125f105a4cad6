"""The runtime shim and its wire protocol: standard library only, mounted into every function
container (the agent imports the protocol module from here too)."""
