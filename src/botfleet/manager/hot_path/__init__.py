"""The bots' hot path: heartbeats and reports authenticated from memory (the credential cache),
coalesced, and written in batches; API keys' last use written the same way."""
