"""The asyncio drivers: internode transport, the HTTP API, and the runtime that
feeds events into the core and carries out its effects."""
