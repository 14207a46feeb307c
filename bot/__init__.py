"""Platform-neutral core of the chat bot: events, replies, routing, storage, the model."""
