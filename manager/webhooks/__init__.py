"""Outbound webhooks: each bot transition POSTed to the user's URL, signed the Standard Webhooks
way (https://www.standardwebhooks.com), retried with backoff, every attempt stored.

`models` (tables), `signing` (sign / verify), `guard` (refuses private addresses), `service`
(endpoints and deliveries for the API), `sender` (the leader's tick: fan-out, then sending).
"""
