"""Platform adapters: translate platform messages to Inbound and replies to API calls."""
