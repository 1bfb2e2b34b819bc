"""netns-lab: netplug hosts and containers built from network namespaces on one box."""
