"""The engine: the cluster watcher, what a rollout means, and the sweep that catches what it missed."""
