"""Safe, fast batching for OpenCTI connectors."""
