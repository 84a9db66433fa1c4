"""gpuk8s: bare-metal NVIDIA servers to a GPU Kubernetes cluster."""

__version__ = "0.1.0"
