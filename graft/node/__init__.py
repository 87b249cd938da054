"""The runtime: one asyncio loop that drives the core, storage, transport, FSM and API."""
