"""`botfleet`: the command line for the botfleet API (bots, users, events) and the manager."""
