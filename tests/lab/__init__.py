"""The gpuk8s lab: simulated hosts (real sshd in namespaces) for integration tests."""
