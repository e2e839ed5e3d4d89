"""Redis and the event outbox: commands published to bots, each bot's own ACL user, the embedded
redis-server, the outbox written with each change and the feed `GET /events` reads from it."""
