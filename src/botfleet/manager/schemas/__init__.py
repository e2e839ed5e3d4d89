"""Request and response bodies of the public API (pydantic). Imports only the bottom layer, so
services may take and return them."""
