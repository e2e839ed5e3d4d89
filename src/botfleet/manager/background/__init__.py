"""Work nobody asked for in a request: the leader election, the periodic loops, the reconciler,
housekeeping and the webhook sender. Built on services; never imported by them."""
